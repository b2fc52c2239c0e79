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

static PyMethodDef methods[] = {
    {"frame", frame, METH_VARARGS, frame_doc},
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
        PyModule_AddIntConstant(m, "MAX_DOCUMENT", MAX_DOC) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
