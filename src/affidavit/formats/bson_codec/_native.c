/* affidavit.formats.bson_codec._native: the compiled fast path of the exact BSON fingerprint.
 *
 * frame() frames the concatenated BSON documents of a buffer (a mongodump .bson), takes the
 * exact-profile key of each (the raw top-level _id element, see bson_codec.exact_record) and
 * hashes each record as affidavit.crypto.record_digest.RecordHasher does (no hash code here:
 * see _sha256_evp.h):
 *
 *     SHA-256(key) || SHA-256(tag || u32be(len(key)) || key || document)
 *
 * It takes only what it can read with certainty, and stops at anything else without raising,
 * so that the Python path reads that document and words any defect exactly as it does alone:
 *
 *   - framing, as bson_codec.frame_exact_keys and base.BsonFramer check it: an int32 length
 *     in MIN_DOC..MAX_DOC, the whole document in the buffer, its last byte NUL;
 *   - the key, only when _id is the document's FIRST element (every document mongod writes)
 *     and its value is a fixed-size type, a string, JavaScript code or symbol (int32 length
 *     >= 1, in the document, ending with NUL), an embedded document, array or code with scope
 *     (int32 length >= 5, in the document) or a binary (int32 length >= 0 + subtype, in the
 *     document): the bounds bson_codec._value_end checks, nothing else. Regex and DBPointer
 *     _ids, an _id elsewhere, unknown types: left to Python.
 *
 * A document that the buffer cuts off (or fewer than 4 bytes left) ends the call with status
 * MORE: the caller carries it over. Every read is bounds-checked against `end`, every length
 * against what is left; nothing is allocated by an unchecked length.
 *
 * validate() is the full check of bson_codec.check_documents without building any Python
 * value: it walks every element of every document (iteratively, explicit stack of at most
 * 100 + 1 containers, GIL released) and returns the offset of the first document it does not
 * accept. Soundness: its acceptance is a SUBSET of pymongo's (bson._cbson 4.20, decode_all /
 * decode with CodecOptions(datetime_conversion=DATETIME_AUTO), strict UTF-8): each check in
 * valid_doc() is one that get_value / _element_to_dict / elements_to_dict make, or a stricter
 * one (every value must end before its own container's NUL, where pymongo, inside arrays,
 * measures against a larger `max`; lengths compared in 64 bits where pymongo guards its
 * uint32 sums), and every value it lets through builds without an error in pymongo: any
 * double, int32/int64, ObjectId, decimal128 (from_bid does not look at the bits), timestamp,
 * datetime (DATETIME_AUTO: a datetime inside its range, DatetimeMS outside, any int64),
 * binary of any subtype (uuid_representation UNSPECIFIED: no UUID conversion; subtype 2 only
 * with its inner length == length - 4), regex (any flag letters: unknown ones are ignored),
 * DBRef-looking documents (the hook never fails: a non-string $ref/$db leaves the dict as
 * is), duplicate names (the last wins). What it does not accept goes to pymongo, which then
 * decides and words the error exactly as without this module; so check_documents' outcome
 * and messages are pymongo's. Not accepted (deferred): unknown type bytes, an element type 0
 * before the end, bool other than 0/1, invalid UTF-8 (overlong, surrogate, > U+10FFFF,
 * truncated) in names of documents and scopes, strings, code, symbols, DBPointer namespaces
 * and regex pattern or flags, any length that does not match, and nesting deeper than
 * `max_depth` (<= 100; the caller lowers it when the Python stack leaves pymongo less
 * recursion budget, see bson_codec._validate_depth). Array element names are not checked:
 * pymongo skips them without decoding.
 *
 * ranges() is file_ranges.bson_file_ranges' walk over the length prefixes of a mapped file,
 * with the GIL released: the same ranges, and the same defect (malformed or truncated, at
 * the same offset) for the caller to word.
 *
 * resync() guesses where documents start again at a byte offset of a file (a few documents
 * in a row that look whole), for readers that split a file by bytes and confirm each guess
 * by framing up to it from a known start (services.fingerprint's threaded ranges).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_sha256_evp.h" /* SHA-256: OpenSSL EVP, else hashlib */

#define ST_STOP 0 /* the document at `stop` is for the Python path */
#define ST_MORE 1 /* no whole document left at `stop` (the buffer ends inside one, or at it) */

#define MIN_DOC 5
/* formats.base.MAX_BSON_DOCUMENT_SIZE (checked against it at import by bson_codec) */
#define MAX_DOC (16 * 1024 * 1024 + 16 * 1024)

static inline int32_t
le_i32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

/* value size of the fixed-size types, -1 for the others (bson_codec._FIXED_SIZE) */
static int
fixed_size(uint8_t t)
{
    switch (t) {
    case 0x06: /* undefined */
    case 0x0A: /* null */
    case 0x7F: /* MaxKey */
    case 0xFF: /* MinKey */
        return 0;
    case 0x08: /* bool */
        return 1;
    case 0x10: /* int32 */
        return 4;
    case 0x01: /* double */
    case 0x09: /* UTC datetime */
    case 0x11: /* timestamp */
    case 0x12: /* int64 */
        return 8;
    case 0x07: /* ObjectId */
        return 12;
    case 0x13: /* decimal128 */
        return 16;
    default:
        return -1;
    }
}

/* The end (relative to the document) of the first element when it is `_id` and its value is
 * one this module bounds, else 0. `n` >= MIN_DOC is the document's length; its last byte
 * (n - 1, a NUL) is `last`, which no value may reach (bson_codec.exact_record's `end`). */
static size_t
id_end(const uint8_t *d, size_t n)
{
    size_t last = n - 1;
    if (last < 9 || memcmp(d + 5, "_id\0", 4) != 0)
        return 0;
    uint8_t t = d[4];
    int size = fixed_size(t);
    if (size >= 0)
        return 9 + (size_t)size <= last ? 9 + (size_t)size : 0;
    int64_t stop;
    switch (t) {
    case 0x02: /* string */
    case 0x0D: /* JavaScript code */
    case 0x0E: /* symbol: int32 length (with the NUL) + bytes + NUL */
        if (13 > last)
            return 0;
        stop = 13 + (int64_t)le_i32(d + 9);
        if (stop < 14 || stop > (int64_t)last || d[stop - 1] != 0)
            return 0;
        return (size_t)stop;
    case 0x03: /* document */
    case 0x04: /* array */
    case 0x0F: /* code with scope: int32 total size */
        if (13 > last)
            return 0;
        stop = 9 + (int64_t)le_i32(d + 9);
        if (stop < 9 + MIN_DOC || stop > (int64_t)last)
            return 0;
        return (size_t)stop;
    case 0x05: /* binary: int32 length + subtype + bytes */
        if (14 > last)
            return 0;
        stop = 14 + (int64_t)le_i32(d + 9);
        if (stop < 14 || stop > (int64_t)last)
            return 0;
        return (size_t)stop;
    default:
        return 0;
    }
}

typedef struct {
    uint8_t *p;
    size_t n, cap;
} Buf;

/* appends; -1 when memory runs out (no exception set: callable without the GIL) */
static int
buf_put(Buf *b, const void *data, size_t n)
{
    if (n > SIZE_MAX / 2 - b->n)
        return -1;
    size_t need = b->n + n;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 256;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n = need;
    return 0;
}

/* The document at `pos`: 1 when this module takes it (*n its length, *kend the end of its
 * _id element, relative to it), else 0 with *status saying why. */
static int
next_doc(const uint8_t *in, size_t end, size_t pos, size_t *n, size_t *kend, int *status)
{
    if (end - pos < 4) {
        *status = ST_MORE;
        return 0;
    }
    int32_t length = le_i32(in + pos);
    if (length < MIN_DOC || length > MAX_DOC) {
        *status = ST_STOP;
        return 0;
    }
    if ((size_t)length > end - pos) {
        *status = ST_MORE;
        return 0;
    }
    const uint8_t *d = in + pos;
    if (d[length - 1] != 0 || (*kend = id_end(d, (size_t)length)) == 0) {
        *status = ST_STOP;
        return 0;
    }
    *n = (size_t)length;
    return 1;
}

/* The record hash input's u32be(len(key)) */
static void
be32_into(uint8_t out[4], size_t v)
{
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
}

/* The loop of frame() without keys, run with the GIL released: OpenSSL with the private
 * context `ctx`, no Python object touched. 0, or -1 (out of memory, or OpenSSL failed:
 * *oom says which). */
static int
frame_nogil(void *ctx, const uint8_t *in, size_t end, size_t *pos_io, const uint8_t *tag,
            size_t tag_len, Buf *pairs, int *status, int *oom)
{
    size_t pos = *pos_io, n, kend;
    int r = 0;
    while (next_doc(in, end, pos, &n, &kend, status)) {
        const uint8_t *d = in + pos;
        size_t klen = kend - 4;
        uint8_t len4[4], md[64];
        be32_into(len4, klen);
        const void *kparts[1] = {d + 4};
        const void *rparts[4] = {tag, len4, d + 4, d};
        size_t rlens[4] = {tag_len, 4, klen, n};
        if (sha256_evp_parts(ctx, md, kparts, &klen, 1) != 0 ||
            sha256_evp_parts(ctx, md + 32, rparts, rlens, 4) != 0) {
            r = -1;
            break;
        }
        if (buf_put(pairs, md, 64) != 0) {
            *oom = 1;
            r = -1;
            break;
        }
        pos += n;
    }
    *pos_io = pos;
    return r;
}

PyDoc_STRVAR(frame_doc,
"frame(buf, pos, tag, want_keys, starts=None) -> (stop, pairs, keys, status)\n\n"
"Frame, key and hash the whole BSON documents of buf from `pos` on (exact profile, record\n"
"tag `tag`) until the end of the buffer or a document cut off by it (status MORE) or the\n"
"first document for the Python path (status STOP): malformed framing, _id not first or\n"
"of a type left to Python. `pairs`: key_hash || record_hash of each document taken,\n"
"concatenated; `keys`: their keys when `want_keys`, else None; `stop`: the offset of the\n"
"first document not taken. `starts`, when given, is the list of document offsets the caller\n"
"expects: a document whose offset differs from it (or beyond it) stops the call. Never\n"
"raises for the content of `buf`.");

static PyObject *
frame(PyObject *module, PyObject *args)
{
    Py_buffer view, tag;
    Py_ssize_t pos_arg;
    int want_keys;
    PyObject *starts = Py_None;
    if (!PyArg_ParseTuple(args, "y*ny*p|O:frame", &view, &pos_arg, &tag, &want_keys, &starts))
        return NULL;
    PyObject *result = NULL, *keys = NULL;
    Buf pairs = {NULL, 0, 0};
    if (pos_arg < 0 || pos_arg > view.len) {
        PyErr_SetString(PyExc_ValueError, "frame: need 0 <= pos <= len(buf)");
        goto done;
    }
    if (starts != Py_None && !PyList_Check(starts)) {
        PyErr_SetString(PyExc_TypeError, "frame: starts must be a list or None");
        goto done;
    }
    if (tag.len > 1024) {
        PyErr_SetString(PyExc_ValueError, "frame: implausible record tag");
        goto done;
    }
    if (want_keys && (keys = PyList_New(0)) == NULL)
        goto done;
    const uint8_t *in = view.buf;
    const size_t end = (size_t)view.len;
    size_t pos = (size_t)pos_arg;
    Py_ssize_t made = 0;
    int status = ST_MORE;
    void *ctx = !want_keys && starts == Py_None ? sha256_private_ctx() : NULL;
    if (ctx != NULL) { /* nothing of Python is needed: let the other threads run meanwhile */
        int failed, oom = 0;
        Py_BEGIN_ALLOW_THREADS
        failed = frame_nogil(ctx, in, end, &pos, tag.buf, (size_t)tag.len, &pairs, &status,
                             &oom);
        Py_END_ALLOW_THREADS
        sha256_private_ctx_free(ctx);
        if (failed) {
            if (oom)
                PyErr_NoMemory();
            else
                PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
            goto done;
        }
    }
    else {
        size_t n, kend;
        while (next_doc(in, end, pos, &n, &kend, &status)) {
            if (starts != Py_None) {
                if (made >= PyList_GET_SIZE(starts)) {
                    status = ST_STOP;
                    break;
                }
                Py_ssize_t want = PyLong_AsSsize_t(PyList_GET_ITEM(starts, made));
                if (want == -1 && PyErr_Occurred())
                    goto done;
                if (want != (Py_ssize_t)pos) {
                    status = ST_STOP;
                    break;
                }
            }
            const uint8_t *d = in + pos;
            const uint8_t *key = d + 4;
            size_t klen = kend - 4; /* < MAX_DOC: fits the u32 */
            uint8_t len4[4];
            unsigned char md[64];
            be32_into(len4, klen);
            const void *kparts[1] = {key};
            const void *rparts[4] = {tag.buf, len4, key, d};
            size_t rlens[4] = {(size_t)tag.len, 4, klen, n};
            if (sha256_parts(md, kparts, &klen, 1) != 0 ||
                sha256_parts(md + 32, rparts, rlens, 4) != 0)
                goto done;
            if (buf_put(&pairs, md, 64) != 0) {
                PyErr_NoMemory();
                goto done;
            }
            if (want_keys) {
                PyObject *k = PyBytes_FromStringAndSize((const char *)key, (Py_ssize_t)klen);
                if (k == NULL)
                    goto done;
                int failed = PyList_Append(keys, k) < 0;
                Py_DECREF(k);
                if (failed)
                    goto done;
            }
            made++;
            pos += n;
        }
    }
    PyObject *pairs_obj = PyBytes_FromStringAndSize((const char *)pairs.p, (Py_ssize_t)pairs.n);
    if (pairs_obj == NULL)
        goto done;
    result = Py_BuildValue("(nNOi)", (Py_ssize_t)pos, pairs_obj, keys ? keys : Py_None, status);
done:
    Py_XDECREF(keys);
    free(pairs.p);
    PyBuffer_Release(&view);
    PyBuffer_Release(&tag);
    return result;
}

/* ---- validate(): a full check whose acceptance is a subset of pymongo's ------------------ */

/* Deepest nesting of documents, arrays and code-with-scope scopes below a top-level document
 * that validate() walks (MongoDB's own limit is 100); deeper documents are left to pymongo.
 * The caller may ask for less (see bson_codec.check_documents: pymongo's recursion budget). */
#define VALIDATE_MAX_DEPTH 100

/* 1 when p[0..n) is UTF-8 exactly as Python's strict decoder (and so PyUnicode_DecodeUTF8
 * with errors="strict", which pymongo calls) accepts it: the well-formed sequences of Unicode
 * table 3-7, i.e. no overlong form, no surrogate (ED A0..BF), nothing above U+10FFFF (F4 90..,
 * F5..FF), no stray continuation byte, no truncated sequence. NUL is a valid character. */
static int
utf8_ok(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII runs, 8 bytes at a time */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i >= n)
            break;
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            if (n - i < 2 || (p[i + 1] & 0xC0) != 0x80)
                return 0;
            i += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            if (n - i < 3)
                return 0;
            uint8_t c1 = p[i + 1];
            uint8_t lo = c == 0xE0 ? 0xA0 : 0x80; /* E0 80..9F: overlong */
            uint8_t hi = c == 0xED ? 0x9F : 0xBF; /* ED A0..BF: surrogates */
            if (c1 < lo || c1 > hi || (p[i + 2] & 0xC0) != 0x80)
                return 0;
            i += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            if (n - i < 4)
                return 0;
            uint8_t c1 = p[i + 1];
            uint8_t lo = c == 0xF0 ? 0x90 : 0x80; /* F0 80..8F: overlong */
            uint8_t hi = c == 0xF4 ? 0x8F : 0xBF; /* F4 90..: above U+10FFFF */
            if (c1 < lo || c1 > hi || (p[i + 2] & 0xC0) != 0x80 || (p[i + 3] & 0xC0) != 0x80)
                return 0;
            i += 4;
        }
        else /* 80..C1 (continuation, overlong 2-byte lead), F5..FF */
            return 0;
    }
    return 1;
}

static inline uint32_t
le_u32(const uint8_t *p)
{
    return (uint32_t)le_i32(p);
}

/* A container being walked: its elements run up to `term`, the offset of its trailing NUL. */
#define K_DOC 0   /* document or code-with-scope scope: names are decoded (strict UTF-8) */
#define K_ARRAY 1 /* array: pymongo skips the names without decoding them */

typedef struct {
    size_t term;
    int kind;
} Frame;

/* 1 when the whole document at in[pos..pos + n) (n its length prefix, already within the
 * buffer, 5 <= n <= MAX_DOC) is one this module accepts, else 0. The walk is iterative with
 * an explicit stack of at most max_depth + 1 frames. Every check below is one pymongo's
 * get_value / _element_to_dict / elements_to_dict makes, or stricter; no case accepted here
 * reaches one of its errors (see the module comment). */
static int
valid_doc(const uint8_t *in, size_t pos, size_t n, int max_depth)
{
    Frame stack[VALIDATE_MAX_DEPTH + 1];
    int top = 0;
    if (in[pos + n - 1] != 0) /* pymongo: "bad eoo" */
        return 0;
    stack[0].term = pos + n - 1;
    stack[0].kind = K_DOC;
    pos += 4;
    for (;;) {
        size_t term = stack[top].term;
        if (pos == term) { /* the container ends exactly at its NUL */
            pos = term + 1;
            if (top == 0)
                return 1;
            top--;
            continue;
        }
        /* pos < term here: every element must end before the container's NUL */
        uint8_t t = in[pos];
        const uint8_t *name = in + pos + 1;
        size_t room = term - (pos + 1);
        /* the name's NUL strictly before the container's NUL (pymongo: "field name too
         * large" otherwise); t == 0 (an early end) is refused below as an unknown type */
        const uint8_t *nul = memchr(name, 0, room);
        if (nul == NULL)
            return 0;
        size_t name_len = (size_t)(nul - name);
        if (stack[top].kind == K_DOC && !utf8_ok(name, name_len))
            return 0;
        size_t v = pos + 1 + name_len + 1;   /* the value's offset */
        size_t avail = term - v;             /* bytes left before the container's NUL */
        size_t size;                         /* the value's size */
        switch (t) {
        case 0x01: /* double */
        case 0x09: /* UTC datetime: every int64 (datetime, or DatetimeMS outside its range) */
        case 0x11: /* timestamp: two uint32 */
        case 0x12: /* int64 */
            size = 8;
            break;
        case 0x06: /* undefined */
        case 0x0A: /* null */
        case 0x7F: /* MaxKey */
        case 0xFF: /* MinKey */
            size = 0;
            break;
        case 0x07: /* ObjectId: any 12 bytes */
            size = 12;
            break;
        case 0x10: /* int32 */
            size = 4;
            break;
        case 0x13: /* decimal128: any 16 bytes (Decimal128.from_bid does not check them) */
            size = 16;
            break;
        case 0x08: /* bool: 0 or 1 only ("invalid boolean value") */
            if (avail < 1 || in[v] > 1)
                return 0;
            size = 1;
            break;
        case 0x02: /* string */
        case 0x0D: /* JavaScript code */
        case 0x0E: /* symbol: uint32 length L >= 1 (with the NUL), L bytes, the last NUL,
                    * the L - 1 before it strict UTF-8 (NULs inside are characters) */
        {
            if (avail < 4)
                return 0;
            uint64_t len = le_u32(in + v);
            if (len < 1 || len > avail - 4 || in[v + 4 + len - 1] != 0 ||
                !utf8_ok(in + v + 4, (size_t)len - 1))
                return 0;
            size = 4 + (size_t)len;
            break;
        }
        case 0x0C: /* DBPointer: a string as above, then a 12-byte ObjectId */
        {
            if (avail < 4)
                return 0;
            uint64_t len = le_u32(in + v);
            if (len < 1 || len + 12 > avail - 4 || in[v + 4 + len - 1] != 0 ||
                !utf8_ok(in + v + 4, (size_t)len - 1))
                return 0;
            size = 4 + (size_t)len + 12;
            break;
        }
        case 0x05: /* binary: uint32 length L, subtype, L bytes; subtype 2 (old binary)
                    * holds an inner uint32 that must be L - 4 */
        {
            if (avail < 5)
                return 0;
            uint64_t len = le_u32(in + v);
            if (len > avail - 5)
                return 0;
            if (in[v + 4] == 2 && (len < 4 || le_u32(in + v + 5) != len - 4))
                return 0;
            size = 5 + (size_t)len;
            break;
        }
        case 0x0B: /* regex: two cstrings (pattern, options), both strict UTF-8, both NULs
                    * before the container's NUL */
        {
            const uint8_t *pat = in + v;
            const uint8_t *p_nul = memchr(pat, 0, avail);
            if (p_nul == NULL)
                return 0;
            size_t p_len = (size_t)(p_nul - pat);
            const uint8_t *opt = p_nul + 1;
            const uint8_t *o_nul = memchr(opt, 0, avail - p_len - 1);
            if (o_nul == NULL)
                return 0;
            size_t o_len = (size_t)(o_nul - opt);
            if (!utf8_ok(pat, p_len) || !utf8_ok(opt, o_len))
                return 0;
            size = p_len + 1 + o_len + 1;
            break;
        }
        case 0x03: /* document */
        case 0x04: /* array: uint32 size S >= 5, within what is left, last byte NUL */
        {
            if (avail < 4)
                return 0;
            uint64_t s = le_u32(in + v);
            if (s < MIN_DOC || s > avail || in[v + s - 1] != 0)
                return 0;
            if (top >= max_depth)
                return 0; /* deeper than this module walks: pymongo decides */
            /* the parent resumes after the value: written back once the child is done */
            top++;
            stack[top].term = v + (size_t)s - 1;
            stack[top].kind = t == 0x04 ? K_ARRAY : K_DOC;
            pos = v + 4;
            continue;
        }
        case 0x0F: /* code with scope: uint32 total C, then a string as above (code >= 1),
                    * then a document (scope, S >= 5, last byte NUL) with 4 + 4 + code +
                    * S == C exactly, all within what is left */
        {
            if (avail < 14)
                return 0;
            uint64_t c = le_u32(in + v);
            if (c < 14 || c > avail)
                return 0;
            uint64_t code = le_u32(in + v + 4);
            if (code < 1 || code > c - 12 || in[v + 8 + code - 1] != 0 ||
                !utf8_ok(in + v + 8, (size_t)code - 1))
                return 0;
            uint64_t s = le_u32(in + v + 8 + code);
            if (s < MIN_DOC || 8 + code + s != c || in[v + c - 1] != 0)
                return 0;
            if (top >= max_depth)
                return 0;
            top++;
            stack[top].term = v + (size_t)c - 1; /* the scope's NUL is the value's last byte */
            stack[top].kind = K_DOC;
            pos = v + 8 + (size_t)code + 4;
            continue;
        }
        default: /* 0x00 (an early end), unknown or deprecated-beyond-pymongo types */
            return 0;
        }
        if (size > avail)
            return 0;
        pos = v + size;
    }
}

/* The offset of the first document from `pos` on that validate() does not accept, or `end`.
 * Runs without the GIL: reads `in` only. */
static size_t
validate_nogil(const uint8_t *in, size_t end, size_t pos, int max_depth)
{
    while (pos < end) {
        if (end - pos < 4)
            return pos;
        int32_t length = le_i32(in + pos);
        if (length < MIN_DOC || length > MAX_DOC || (size_t)length > end - pos)
            return pos;
        if (!valid_doc(in, pos, (size_t)length, max_depth))
            return pos;
        pos += (size_t)length;
    }
    return pos;
}

PyDoc_STRVAR(validate_doc,
"validate(buf, pos, max_depth=100) -> int\n\n"
"Check the whole BSON documents of buf from `pos` on, one after the other, and return the\n"
"offset of the first one this module does not accept (len(buf) when it accepts them all).\n"
"Every document accepted is one that bson.decode (pymongo's C decoder, strict UTF-8, any\n"
"datetime) decodes without an error; a document not accepted may still be fine: the caller\n"
"hands it to pymongo. Documents nested deeper than `max_depth` (0..100) are not accepted.\n"
"Runs with the GIL released; never raises for the content of `buf`.");

static PyObject *
validate(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos_arg;
    int max_depth = VALIDATE_MAX_DEPTH;
    if (!PyArg_ParseTuple(args, "y*n|i:validate", &view, &pos_arg, &max_depth))
        return NULL;
    if (pos_arg < 0 || pos_arg > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "validate: need 0 <= pos <= len(buf)");
        return NULL;
    }
    if (max_depth < 0)
        max_depth = 0;
    if (max_depth > VALIDATE_MAX_DEPTH)
        max_depth = VALIDATE_MAX_DEPTH;
    size_t stop;
    Py_BEGIN_ALLOW_THREADS
    stop = validate_nogil(view.buf, (size_t)view.len, (size_t)pos_arg, max_depth);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSize_t(stop);
}

/* ---- ranges(): file_ranges.bson_file_ranges' length-prefix walk ------------------------ */

#define RANGES_OK 0        /* the walk reached the end of the buffer */
#define RANGES_MALFORMED 1 /* an implausible length prefix (or < 4 bytes left) at `bad` */
#define RANGES_TRUNCATED 2 /* a document at `bad` runs past the end of the buffer */

/* The walk of ranges(), without the GIL: (offset, length) pairs appended to `out` (int64
 * each); 0, or -1 when memory runs out. */
static int
ranges_nogil(const uint8_t *in, size_t end, uint64_t target, int64_t min_doc, int64_t max_doc,
             Buf *out, int *status, size_t *bad)
{
    size_t start = 0, pos = 0;
    *status = RANGES_OK;
    while (pos < end) {
        int64_t length = end - pos >= 4 ? (int64_t)le_i32(in + pos) : 0;
        if (length < min_doc || length > max_doc) {
            *status = RANGES_MALFORMED;
            *bad = pos;
            return 0;
        }
        if ((uint64_t)length > end - pos) {
            *status = RANGES_TRUNCATED;
            *bad = pos;
            return 0;
        }
        pos += (size_t)length;
        if (pos - start >= target) {
            int64_t pair[2] = {(int64_t)start, (int64_t)(pos - start)};
            if (buf_put(out, pair, sizeof pair) != 0)
                return -1;
            start = pos;
        }
    }
    if (pos > start) {
        int64_t pair[2] = {(int64_t)start, (int64_t)(pos - start)};
        if (buf_put(out, pair, sizeof pair) != 0)
            return -1;
    }
    return 0;
}

PyDoc_STRVAR(ranges_doc,
"ranges(buf, target, min_doc, max_doc) -> (ranges, status, bad)\n\n"
"file_ranges.bson_file_ranges' walk over the length prefixes of buf (a mapped .bson file):\n"
"`ranges` the (offset, length) ranges of whole documents, each closed as soon as it holds\n"
">= target bytes, the last one at the end of buf; `status` RANGES_OK, or RANGES_MALFORMED\n"
"(a length prefix outside min_doc..max_doc, or fewer than 4 bytes left) or RANGES_TRUNCATED\n"
"(a document past the end) at offset `bad`, `ranges` then holding the ranges closed before\n"
"it (the trailing partial one is not given). Runs with the GIL released (target >= 1).");

static PyObject *
ranges(PyObject *module, PyObject *args)
{
    Py_buffer view;
    long long target, min_doc, max_doc;
    if (!PyArg_ParseTuple(args, "y*LLL:ranges", &view, &target, &min_doc, &max_doc))
        return NULL;
    PyObject *result = NULL, *list = NULL;
    Buf out = {NULL, 0, 0};
    if (target < 1 || min_doc < 1 || max_doc < min_doc || max_doc > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "ranges: need target >= 1, 1 <= min_doc <= max_doc");
        goto done;
    }
    int status = RANGES_OK, failed;
    size_t bad = 0;
    Py_BEGIN_ALLOW_THREADS
    failed = ranges_nogil(view.buf, (size_t)view.len, (uint64_t)target, min_doc, max_doc, &out,
                          &status, &bad);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    size_t count = out.n / (2 * sizeof(int64_t));
    if ((list = PyList_New((Py_ssize_t)count)) == NULL)
        goto done;
    for (size_t i = 0; i < count; i++) {
        int64_t pair[2];
        memcpy(pair, out.p + i * sizeof pair, sizeof pair);
        PyObject *item = Py_BuildValue("(LL)", (long long)pair[0], (long long)pair[1]);
        if (item == NULL)
            goto done;
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    result = Py_BuildValue("(Oin)", list, status, (Py_ssize_t)bad);
done:
    Py_XDECREF(list);
    free(out.p);
    PyBuffer_Release(&view);
    return result;
}

/* ---- resync(): where documents start again, for readers that split a file by bytes ------- */

/* Element type bytes a BSON document may begin with (MongoDB's, deprecated ones included). */
static int
plausible_type(uint8_t t)
{
    return (t >= 0x01 && t <= 0x13) || t == 0x7F || t == 0xFF;
}

/* The first offset p >= at of buf at which `chain` documents in a row look whole: an int32
 * length in min_doc..max_doc, the last byte NUL, the first byte after the length a type (or
 * the document empty). After at least one whole document, a document the buffer cuts off
 * (or fewer than 4 bytes left) ends the chain as "not refuted"; the first one must be whole
 * (a length in range that merely runs past the buffer is too common to count). The caller
 * confirms every guess by framing up to it from a known start. -1 when there is none (and
 * *resume says where a scan with more bytes must start again). Pure guess-work, never a
 * check: nothing here decides what a file holds. */
static Py_ssize_t
resync_at(const uint8_t *in, size_t end, size_t at, int chain, int64_t min_doc, int64_t max_doc,
          size_t *resume)
{
    /* *resume: where a later scan of the same bytes with more after them must start again:
     * the first offset refused only because its first document ran past the buffer (or
     * the first with fewer than 4 bytes left); every offset before it is refused for good */
    *resume = end >= 3 && end - 3 > at ? end - 3 : at;
    for (size_t p = at; p + 4 <= end; p++) {
        size_t q = p;
        int good = 1, whole = 0;
        for (int i = 0; i < chain && q + 4 <= end; i++) {
            int64_t length = (int64_t)le_i32(in + q);
            /* one unsigned compare, not two: on random bytes `length < min_doc` is a coin
             * toss the branch predictor loses half the time (3.6 -> 0.5 ns a byte) */
            if ((uint64_t)(length - min_doc) > (uint64_t)(max_doc - min_doc)) {
                good = 0;
                break;
            }
            if ((uint64_t)length > end - q) {
                good = whole > 0; /* cut off by the buffer: not refuted after a whole one */
                if (!good && p < *resume)
                    *resume = p;
                break;
            }
            whole++;
            if (in[q + length - 1] != 0 || (length > 5 && !plausible_type(in[q + 4]))) {
                good = 0;
                break;
            }
            q += (size_t)length;
        }
        if (good)
            return (Py_ssize_t)p;
    }
    return -1;
}

PyDoc_STRVAR(resync_doc,
"resync(buf, at, chain, min_doc, max_doc) -> int\n\n"
"The first offset >= `at` of buf where `chain` consecutive documents look whole (int32\n"
"length in min_doc..max_doc, last byte NUL, a type byte first; the first one whole, a later\n"
"one cut off by the end of buf does not refute the guess), or, when there is none,\n"
"-1 - r: r is where a scan of the same bytes with more after them must start again (every\n"
"offset before r is refuted whatever follows buf). A guess for readers that split a file\n"
"by bytes: they confirm it by framing up to it from a known document start.\n"
"Never raises for the content of buf.");

static PyObject *
resync(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t at;
    int chain;
    long long min_doc, max_doc;
    if (!PyArg_ParseTuple(args, "y*niLL:resync", &view, &at, &chain, &min_doc, &max_doc))
        return NULL;
    PyObject *result = NULL;
    if (at < 0 || at > view.len || chain < 1 || min_doc < 5 || max_doc < min_doc ||
        max_doc > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "resync: need 0 <= at <= len(buf), chain >= 1, 5 <= min_doc <= max_doc");
        goto done;
    }
    Py_ssize_t found;
    size_t resume;
    Py_BEGIN_ALLOW_THREADS
    found = resync_at(view.buf, (size_t)view.len, (size_t)at, chain, min_doc, max_doc, &resume);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(found >= 0 ? found : -1 - (Py_ssize_t)resume);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"frame", frame, METH_VARARGS, frame_doc},
    {"validate", validate, METH_VARARGS, validate_doc},
    {"ranges", ranges, METH_VARARGS, ranges_doc},
    {"resync", resync, METH_VARARGS, resync_doc},
    {"hash_backend", sha256_backend, METH_VARARGS, SHA256_BACKEND_DOC},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_native",
    "The compiled fast path of the exact BSON fingerprint (see _native.c).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (sha256_setup() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "STOP", ST_STOP) < 0 ||
        PyModule_AddIntConstant(m, "MORE", ST_MORE) < 0 ||
        PyModule_AddIntConstant(m, "MAX_DOCUMENT", MAX_DOC) < 0 ||
        PyModule_AddIntConstant(m, "VALIDATE_MAX_DEPTH", VALIDATE_MAX_DEPTH) < 0 ||
        PyModule_AddIntConstant(m, "RANGES_OK", RANGES_OK) < 0 ||
        PyModule_AddIntConstant(m, "RANGES_MALFORMED", RANGES_MALFORMED) < 0 ||
        PyModule_AddIntConstant(m, "RANGES_TRUNCATED", RANGES_TRUNCATED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
