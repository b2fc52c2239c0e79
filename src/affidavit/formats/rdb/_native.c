/* affidavit.formats.rdb._native: the compiled fast path of the RDB fingerprint pass.
 *
 * scan() parses the common records of an RDB file straight from the reader's buffer, writes
 * each live key's canonical record exactly as affidavit.formats.redis_codec.encode_redis_record
 * does (key, deterministic CBOR of [type, value, expire_at_ms | null]) and hashes it as
 * affidavit.crypto.record_digest.RecordHasher does (no hash code here: SHA-256 is OpenSSL's
 * EVP digest from the very libcrypto that Python's hashlib loaded, found with dlsym, with the
 * algorithm fetched and the context made once; when that is not there, hashlib.sha256 through
 * the C API):
 *
 *     key_hash || SHA-256(tag || u32be(len(key)) || key || value)
 *
 * It takes only what it can read with certainty; it stops, leaving the position at the start
 * of the record, at anything else: another opcode or value type, an encoding it does not
 * take, any inconsistency (the fully checked Python parser then reads that record, or names
 * the damage), or a record that runs past the end of the buffer (the caller then buffers
 * more, or hands the record to the Python parser). It accepts a record only when the Python
 * parser accepts it with the same result. Every read is bounds-checked against `end`, every
 * length against what is left; no allocation is sized by an unchecked length.
 *
 * Records taken: string (raw, int8/16/32, LZF), list (linked, ziplist, quicklist of ziplists,
 * quicklist 2 of listpacks and PLAIN nodes), set (plain, intset, listpack), zset (zset2 with
 * binary scores, ziplist, listpack), hash (plain, ziplist, listpack); prefixes EXPIRETIME,
 * EXPIRETIME_MS, IDLE and FREQ. Left to Python: SELECTDB, RESIZEDB, AUX, EOF, functions,
 * slot info, module data, streams, zipmap hashes, zsets with text scores, field-expiry
 * hashes, LZF strings above 64 MiB.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_sha256_evp.h" /* SHA-256: OpenSSL EVP, else hashlib */

#define RV_OK 0
#define RV_BAD (-1)   /* damage, or an encoding left to the Python parser */
#define RV_MORE (-2)  /* the record runs past the end of the buffer */
#define RV_ERR (-3)   /* a Python exception is set (MemoryError) */
#define RV_SKIP 1     /* a record that is read and dropped (empty aggregate, expired) */

#define ST_STOP 0 /* the next opcode is for the Python parser */
#define ST_MORE 1 /* the next record runs past the end of the buffer */
#define ST_FULL 2 /* `limit` records made */

#define MAX_LZF_OUT ((uint64_t)64 << 20) /* larger LZF strings are left to Python */
#define MAX_SCORE_TEXT 64

enum { W_INPUT = 0, W_ARENA = 1, W_TEXT = 2 };

/* a growable byte buffer */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} Buf;

/* an element of the current record: `len` bytes at `off` of the input, the arena (LZF
 * output) or the text buffer (integers as decimal text); `score` for zset members */
typedef struct {
    size_t off, len;
    double score;
    int where;
} Elem;

typedef struct {
    const uint8_t *p;
    size_t n;
    size_t i;
} Ref;

typedef struct {
    const uint8_t *in;
    size_t end;
    Buf arena;  /* decompressed LZF strings of the current record */
    Buf text;   /* decimal texts of integers of the current record */
    Buf out;    /* tag || u32be(len(key)) || key || CBOR value of the current record */
    Buf pairs;  /* the pairs made by this call */
    Elem *items;
    size_t n_items, cap_items;
    Ref *refs;
    size_t cap_refs;
} Ctx;

/* --- buffers --------------------------------------------------------------------------- */

static int
buf_reserve(Buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->n) {
        PyErr_NoMemory();
        return RV_ERR;
    }
    size_t need = b->n + extra;
    if (need <= b->cap && b->p != NULL)
        return RV_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return RV_ERR;
    }
    b->p = p;
    b->cap = cap;
    return RV_OK;
}

static int
buf_put(Buf *b, const void *data, size_t n)
{
    if (buf_reserve(b, n) != RV_OK)
        return RV_ERR;
    if (n)
        memcpy(b->p + b->n, data, n);
    b->n += n;
    return RV_OK;
}

static int
buf_byte(Buf *b, uint8_t v)
{
    return buf_put(b, &v, 1);
}

static int
push_item(Ctx *c, int where, size_t off, size_t len)
{
    if (c->n_items == c->cap_items) {
        size_t cap = c->cap_items ? 2 * c->cap_items : 64;
        if (cap > SIZE_MAX / sizeof(Elem)) {
            PyErr_NoMemory();
            return RV_ERR;
        }
        Elem *p = realloc(c->items, cap * sizeof(Elem));
        if (p == NULL) {
            PyErr_NoMemory();
            return RV_ERR;
        }
        c->items = p;
        c->cap_items = cap;
    }
    Elem *e = &c->items[c->n_items++];
    e->off = off;
    e->len = len;
    e->where = where;
    e->score = 0.0;
    return RV_OK;
}

/* an integer as its decimal text (what GET, LRANGE, HGETALL ... return) */
static int
push_int(Ctx *c, int64_t v)
{
    char tmp[24];
    int i = 24;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + (u % 10));
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    size_t off = c->text.n;
    if (buf_put(&c->text, tmp + i, (size_t)(24 - i)) != RV_OK)
        return RV_ERR;
    if (push_item(c, W_TEXT, off, (size_t)(24 - i)) != RV_OK)
        return RV_ERR;
    c->items[c->n_items - 1].score = (double)v; /* float(int), for zset scores */
    return RV_OK;
}

static inline const uint8_t *
elem_ptr(const Ctx *c, const Elem *e)
{
    switch (e->where) {
    case W_INPUT:
        return c->in + e->off;
    case W_ARENA:
        return c->arena.p + e->off;
    default:
        return c->text.p + e->off;
    }
}

static inline uint32_t
le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint16_t
le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint64_t
le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static inline uint32_t
be32(const uint8_t *p)
{
    return (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

static inline uint64_t
be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | (uint64_t)be32(p + 4);
}

/* the signed little-endian integer of `size` (1..8) bytes */
static int64_t
sle(const uint8_t *p, size_t size)
{
    uint64_t u = 0;
    for (size_t i = 0; i < size; i++)
        u |= (uint64_t)p[i] << (8 * i);
    if (size < 8 && (u >> (8 * size - 1)) & 1)
        u |= ~(uint64_t)0 << (8 * size);
    return (int64_t)u;
}

/* --- RDB lengths and strings ------------------------------------------------------------ */

/* a length (6, 14, 32 or 64 bits) or, with *encoded set, a special string encoding tag */
static int
rd_len(const Ctx *c, size_t *pos, uint64_t *val, int *encoded)
{
    size_t p = *pos;
    if (p >= c->end)
        return RV_MORE;
    uint8_t b = c->in[p];
    *encoded = 0;
    switch (b >> 6) {
    case 0:
        *val = b & 0x3F;
        *pos = p + 1;
        return RV_OK;
    case 1:
        if (c->end - p < 2)
            return RV_MORE;
        *val = (uint64_t)(b & 0x3F) << 8 | c->in[p + 1];
        *pos = p + 2;
        return RV_OK;
    case 3:
        *val = b & 0x3F;
        *encoded = 1;
        *pos = p + 1;
        return RV_OK;
    default:
        if (b == 0x80) {
            if (c->end - p < 5)
                return RV_MORE;
            *val = be32(c->in + p + 1);
            *pos = p + 5;
            return RV_OK;
        }
        if (b == 0x81) {
            if (c->end - p < 9)
                return RV_MORE;
            *val = be64(c->in + p + 1);
            *pos = p + 9;
            return RV_OK;
        }
        return RV_BAD;
    }
}

static int
rd_count(const Ctx *c, size_t *pos, uint64_t *val)
{
    int encoded;
    int r = rd_len(c, pos, val, &encoded);
    if (r != RV_OK)
        return r;
    return encoded ? RV_BAD : RV_OK;
}

/* LZF: exactly `expected` bytes out of `n` bytes in, or -1 (never writes past `expected`) */
static int
lzf_decompress(const uint8_t *in, size_t n, uint8_t *out, size_t expected)
{
    size_t i = 0, size = 0;
    while (i < n) {
        size_t ctrl = in[i++];
        if (ctrl < 32) {
            size_t run = ctrl + 1;
            if (run > n - i || run > expected - size)
                return -1;
            memcpy(out + size, in + i, run);
            size += run;
            i += run;
            continue;
        }
        size_t run = (ctrl >> 5) + 2;
        if (run == 9) {
            if (i >= n)
                return -1;
            run += in[i++];
        }
        if (i >= n)
            return -1;
        size_t distance = ((ctrl & 0x1F) << 8) + 1 + in[i++];
        if (distance > size || run > expected - size)
            return -1;
        uint8_t *dst = out + size;
        const uint8_t *src = dst - distance;
        for (size_t k = 0; k < run; k++) /* forward: an overlapping run repeats */
            dst[k] = src[k];
        size += run;
    }
    return size == expected ? 0 : -1;
}

/* a string (any encoding) as an element */
static int
rd_string(Ctx *c, size_t *pos, Elem *e)
{
    size_t p = *pos;
    uint64_t v;
    int encoded;
    int r = rd_len(c, &p, &v, &encoded);
    if (r != RV_OK)
        return r;
    if (!encoded) {
        if (v > c->end - p)
            return RV_MORE;
        e->where = W_INPUT;
        e->off = p;
        e->len = (size_t)v;
        *pos = p + (size_t)v;
        return RV_OK;
    }
    if (v <= 2) {
        size_t width = v == 0 ? 1 : v == 1 ? 2 : 4;
        if (c->end - p < width)
            return RV_MORE;
        size_t before = c->n_items;
        if (push_int(c, sle(c->in + p, width)) != RV_OK)
            return RV_ERR;
        *e = c->items[before];
        c->n_items = before;
        *pos = p + width;
        return RV_OK;
    }
    if (v != 3)
        return RV_BAD;
    uint64_t clen, ulen;
    if ((r = rd_count(c, &p, &clen)) != RV_OK)
        return r;
    if ((r = rd_count(c, &p, &ulen)) != RV_OK)
        return r;
    if (clen > c->end - p)
        return RV_MORE;
    if (ulen > MAX_LZF_OUT || ulen > 1024 * clen)
        return RV_BAD;
    size_t off = c->arena.n;
    if (buf_reserve(&c->arena, (size_t)ulen) != RV_OK)
        return RV_ERR;
    if (lzf_decompress(c->in + p, (size_t)clen, c->arena.p + off, (size_t)ulen) != 0)
        return RV_BAD;
    c->arena.n += (size_t)ulen;
    e->where = W_ARENA;
    e->off = off;
    e->len = (size_t)ulen;
    *pos = p + (size_t)clen;
    return RV_OK;
}

/* --- blobs: listpack, ziplist, intset (the checks of rdb.parse_listpack & co) ---------- */

static size_t
backlen_size(size_t length)
{
    if (length < 128)
        return 1;
    if (length < 16384)
        return 2;
    if (length < 2097152)
        return 3;
    if (length < 268435456)
        return 4;
    return 5;
}

static int
parse_listpack(Ctx *c, const Elem *blob)
{
    const uint8_t *b = elem_ptr(c, blob);
    size_t n = blob->len;
    if (n < 7)
        return RV_BAD;
    uint32_t total = le32(b);
    uint16_t count = le16(b + 4);
    if (total != n)
        return RV_BAD;
    size_t pos = 6, end = n - 1, found = 0;
    for (;;) { /* invariant: pos <= end */
        uint8_t enc = b[pos];
        int r = RV_OK;
        if (enc < 0x80) {
            r = push_int(c, enc);
            pos += 2;
        }
        else if (enc < 0xC0) {
            size_t size = enc & 0x3F;
            r = push_item(c, blob->where, blob->off + pos + 1, size);
            pos += size + 2;
        }
        else if (enc == 0xFF) {
            break;
        }
        else if (enc < 0xE0) {
            if (pos + 2 > end)
                return RV_BAD;
            int raw = (enc & 0x1F) << 8 | b[pos + 1];
            r = push_int(c, raw >= 4096 ? raw - 8192 : raw);
            pos += 3;
        }
        else if (enc < 0xF0) {
            if (pos + 2 > end)
                return RV_BAD;
            size_t size = (size_t)(enc & 0x0F) << 8 | b[pos + 1];
            pos += 2;
            r = push_item(c, blob->where, blob->off + pos, size);
            pos += size;
            if (pos > end)
                return RV_BAD;
            pos += backlen_size(2 + size);
        }
        else if (enc == 0xF0) {
            if (pos + 5 > end)
                return RV_BAD;
            size_t size = le32(b + pos + 1);
            pos += 5;
            if (size > end - pos)
                return RV_BAD;
            r = push_item(c, blob->where, blob->off + pos, size);
            pos += size;
            pos += backlen_size(5 + size);
        }
        else if (enc <= 0xF4) {
            static const size_t sizes[] = {2, 3, 4, 8};
            size_t size = sizes[enc - 0xF1];
            pos += 1;
            if (pos + size > end)
                return RV_BAD;
            r = push_int(c, sle(b + pos, size));
            pos += size + 1;
        }
        else {
            return RV_BAD;
        }
        if (r != RV_OK)
            return r;
        if (pos > end)
            return RV_BAD;
        found++;
    }
    if (pos != end)
        return RV_BAD;
    if (count != 0xFFFF && count != found)
        return RV_BAD;
    return RV_OK;
}

static int
parse_ziplist(Ctx *c, const Elem *blob)
{
    const uint8_t *b = elem_ptr(c, blob);
    size_t n = blob->len;
    if (n < 11)
        return RV_BAD;
    uint32_t zlbytes = le32(b), zltail = le32(b + 4);
    uint16_t zllen = le16(b + 8);
    if (zlbytes != n || b[n - 1] != 0xFF)
        return RV_BAD;
    size_t pos = 10, prev_len = 0, last_start = 10, found = 0;
    for (;;) {
        if (pos >= n)
            return RV_BAD;
        if (b[pos] == 0xFF)
            break;
        size_t start = pos;
        size_t prevlen;
        if (b[pos] < 254) {
            prevlen = b[pos];
            pos += 1;
        }
        else {
            if (pos + 5 > n)
                return RV_BAD;
            prevlen = le32(b + pos + 1);
            pos += 5;
        }
        if (prevlen != prev_len || pos >= n)
            return RV_BAD;
        uint8_t enc = b[pos];
        size_t size;
        int is_int = 0;
        switch (enc >> 6) {
        case 0:
            size = enc & 0x3F;
            pos += 1;
            break;
        case 1:
            if (pos + 2 > n)
                return RV_BAD;
            size = (size_t)(enc & 0x3F) << 8 | b[pos + 1];
            pos += 2;
            break;
        case 2:
            if (pos + 5 > n)
                return RV_BAD;
            size = be32(b + pos + 1);
            pos += 5;
            break;
        default:
            pos += 1;
            is_int = 1;
            if (enc == 0xC0)
                size = 2;
            else if (enc == 0xD0)
                size = 4;
            else if (enc == 0xE0)
                size = 8;
            else if (enc == 0xF0)
                size = 3;
            else if (enc == 0xFE)
                size = 1;
            else if (enc >= 0xF1 && enc <= 0xFD)
                size = 0;
            else
                return RV_BAD;
        }
        if (pos > n - 1 || size > n - 1 - pos)
            return RV_BAD;
        int r;
        if (!is_int)
            r = push_item(c, blob->where, blob->off + pos, size);
        else if (size == 0)
            r = push_int(c, (enc & 0x0F) - 1);
        else
            r = push_int(c, sle(b + pos, size));
        if (r != RV_OK)
            return r;
        pos += size;
        found++;
        prev_len = pos - start;
        last_start = start;
    }
    if (pos != n - 1)
        return RV_BAD;
    if (found ? zltail != last_start : zltail != 10)
        return RV_BAD;
    if (zllen != 0xFFFF && zllen != found)
        return RV_BAD;
    return RV_OK;
}

static int
parse_intset(Ctx *c, const Elem *blob)
{
    const uint8_t *b = elem_ptr(c, blob);
    size_t n = blob->len;
    if (n < 8)
        return RV_BAD;
    uint32_t width = le32(b), count = le32(b + 4);
    if (width != 2 && width != 4 && width != 8)
        return RV_BAD;
    if ((uint64_t)(n - 8) != (uint64_t)width * count)
        return RV_BAD;
    int64_t last = 0;
    for (size_t i = 0; i < count; i++) {
        int64_t v = sle(b + 8 + i * width, width);
        if (i && v <= last)
            return RV_BAD;
        last = v;
        int r = push_int(c, v);
        if (r != RV_OK)
            return r;
    }
    return RV_OK;
}

/* a string element holding a ziplist/listpack/intset: its entries appended to the items */
static int
rd_blob(Ctx *c, size_t *pos, int (*parse)(Ctx *, const Elem *))
{
    Elem blob;
    int r = rd_string(c, pos, &blob);
    if (r != RV_OK)
        return r;
    if (blob.where == W_TEXT) /* an integer is no blob (and its text buffer may move) */
        return RV_BAD;
    return parse(c, &blob);
}

/* a zset score saved as text: only the plain decimal forms (and inf/-inf) that float() and
 * PyOS_string_to_double read alike; anything else is left to Python */
static int
text_score(const uint8_t *p, size_t n, double *out)
{
    char tmp[MAX_SCORE_TEXT + 1];
    if (n == 0 || n > MAX_SCORE_TEXT)
        return RV_BAD;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    if (strcmp(tmp, "inf") == 0 || strcmp(tmp, "-inf") == 0) {
        *out = tmp[0] == '-' ? -INFINITY : INFINITY;
        return RV_OK;
    }
    size_t i = 0;
    if (tmp[i] == '-')
        i++;
    size_t digits = 0;
    while (i < n && tmp[i] >= '0' && tmp[i] <= '9')
        i++, digits++;
    if (!digits)
        return RV_BAD;
    if (i < n && tmp[i] == '.') {
        i++;
        digits = 0;
        while (i < n && tmp[i] >= '0' && tmp[i] <= '9')
            i++, digits++;
        if (!digits)
            return RV_BAD;
    }
    if (i < n && (tmp[i] == 'e' || tmp[i] == 'E')) {
        i++;
        if (i < n && (tmp[i] == '+' || tmp[i] == '-'))
            i++;
        digits = 0;
        while (i < n && tmp[i] >= '0' && tmp[i] <= '9')
            i++, digits++;
        if (!digits)
            return RV_BAD;
    }
    if (i != n)
        return RV_BAD;
    char *stop = NULL;
    double v = PyOS_string_to_double(tmp, &stop, NULL);
    if (v == -1.0 && PyErr_Occurred())
        return RV_ERR;
    if (stop != tmp + n || isnan(v))
        return RV_BAD;
    *out = v;
    return RV_OK;
}

/* --- canonical CBOR (RFC 8949 4.2.1 preferred forms, as redis_codec writes them) -------- */

static int
cbor_head(Buf *o, uint8_t major, uint64_t n)
{
    uint8_t h[9];
    size_t len;
    if (n < 24) {
        h[0] = (uint8_t)(major | n);
        len = 1;
    }
    else if (n < 0x100) {
        h[0] = major | 24;
        h[1] = (uint8_t)n;
        len = 2;
    }
    else if (n < 0x10000) {
        h[0] = major | 25;
        h[1] = (uint8_t)(n >> 8);
        h[2] = (uint8_t)n;
        len = 3;
    }
    else if (n < 0x100000000ULL) {
        h[0] = major | 26;
        for (int i = 0; i < 4; i++)
            h[1 + i] = (uint8_t)(n >> (24 - 8 * i));
        len = 5;
    }
    else {
        h[0] = major | 27;
        for (int i = 0; i < 8; i++)
            h[1 + i] = (uint8_t)(n >> (56 - 8 * i));
        len = 9;
    }
    return buf_put(o, h, len);
}

static int
cbor_bytes(Buf *o, const uint8_t *p, size_t n)
{
    if (cbor_head(o, 0x40, n) != RV_OK)
        return RV_ERR;
    return buf_put(o, p, n);
}

#define F16_MAX 65504.0
#define F32_MAX 3.4028234663852886e38

/* the shortest of binary16/32/64 that holds x exactly (x is not NaN), as cbor2 writes it */
static int
cbor_float(Buf *o, double x)
{
    uint8_t b[9];
    if (x >= -F16_MAX && x <= F16_MAX) {
        if (PyFloat_Pack2(x, (char *)b + 1, 0) != 0)
            return RV_ERR;
        double back = PyFloat_Unpack2((const char *)b + 1, 0);
        if (back == -1.0 && PyErr_Occurred())
            return RV_ERR;
        if (back == x) {
            b[0] = 0xF9;
            return buf_put(o, b, 3);
        }
    }
    else if (x == INFINITY) {
        return buf_put(o, "\xf9\x7c\x00", 3);
    }
    else if (x == -INFINITY) {
        return buf_put(o, "\xf9\xfc\x00", 3);
    }
    if (x >= -F32_MAX && x <= F32_MAX) {
        if (PyFloat_Pack4(x, (char *)b + 1, 0) != 0)
            return RV_ERR;
        double back = PyFloat_Unpack4((const char *)b + 1, 0);
        if (back == -1.0 && PyErr_Occurred())
            return RV_ERR;
        if (back == x) {
            b[0] = 0xFA;
            return buf_put(o, b, 5);
        }
    }
    if (PyFloat_Pack8(x, (char *)b + 1, 0) != 0)
        return RV_ERR;
    b[0] = 0xFB;
    return buf_put(o, b, 9);
}

static int
cmp_ref(const void *a, const void *b)
{
    const Ref *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int d = n ? memcmp(x->p, y->p, n) : 0;
    if (d)
        return d;
    return x->n < y->n ? -1 : x->n > y->n;
}

/* items[first], items[first + step], ... sorted bytewise into c->refs; RV_BAD on equal ones */
static int
sorted_refs(Ctx *c, size_t count, size_t step)
{
    if (count > c->cap_refs) {
        if (count > SIZE_MAX / sizeof(Ref)) {
            PyErr_NoMemory();
            return RV_ERR;
        }
        Ref *p = realloc(c->refs, count * sizeof(Ref));
        if (p == NULL) {
            PyErr_NoMemory();
            return RV_ERR;
        }
        c->refs = p;
        c->cap_refs = count;
    }
    for (size_t i = 0; i < count; i++) {
        const Elem *e = &c->items[i * step];
        c->refs[i].p = elem_ptr(c, e);
        c->refs[i].n = e->len;
        c->refs[i].i = i * step;
    }
    if (count > 1)
        qsort(c->refs, count, sizeof(Ref), cmp_ref);
    for (size_t i = 1; i < count; i++)
        if (cmp_ref(&c->refs[i - 1], &c->refs[i]) == 0)
            return RV_BAD; /* a duplicate member or field: the Python parser refuses it */
    return RV_OK;
}

enum { K_STRING, K_LIST, K_SET, K_HASH, K_ZSET };

static const char *const TYPE_HEAD[] = {
    "\x83\x66string", "\x83\x64list", "\x83\x63set", "\x83\x64hash", "\x83\x64zset",
};
static const size_t TYPE_HEAD_LEN[] = {8, 6, 5, 6, 6};

/* the canonical value of the parsed items appended to c->out (c->refs sorted already) */
static int
encode_value(Ctx *c, int kind)
{
    Buf *o = &c->out;
    if (buf_put(o, TYPE_HEAD[kind], TYPE_HEAD_LEN[kind]) != RV_OK)
        return RV_ERR;
    size_t n = c->n_items;
    int r;
    switch (kind) {
    case K_STRING:
        return cbor_bytes(o, elem_ptr(c, &c->items[0]), c->items[0].len);
    case K_LIST:
        if (cbor_head(o, 0x80, n) != RV_OK)
            return RV_ERR;
        for (size_t i = 0; i < n; i++)
            if (cbor_bytes(o, elem_ptr(c, &c->items[i]), c->items[i].len) != RV_OK)
                return RV_ERR;
        return RV_OK;
    case K_SET:
        if (cbor_head(o, 0x80, n) != RV_OK)
            return RV_ERR;
        for (size_t i = 0; i < n; i++)
            if (cbor_bytes(o, c->refs[i].p, c->refs[i].n) != RV_OK)
                return RV_ERR;
        return RV_OK;
    default: /* K_HASH, K_ZSET: items are name, value, name, value ... */
        if (cbor_head(o, 0x80, n / 2) != RV_OK)
            return RV_ERR;
        for (size_t i = 0; i < n / 2; i++) {
            const Elem *name = &c->items[c->refs[i].i];
            const Elem *value = name + 1;
            if (buf_byte(o, 0x82) != RV_OK || cbor_bytes(o, c->refs[i].p, c->refs[i].n) != RV_OK)
                return RV_ERR;
            if (kind == K_HASH)
                r = cbor_bytes(o, elem_ptr(c, value), value->len);
            else
                r = cbor_float(o, name->score);
            if (r != RV_OK)
                return r;
        }
        return RV_OK;
    }
}

/* --- records ----------------------------------------------------------------------------- */

/* `count` strings appended to the items */
static int
rd_strings(Ctx *c, size_t *pos, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        Elem e;
        int r = rd_string(c, pos, &e);
        if (r != RV_OK)
            return r;
        if (push_item(c, e.where, e.off, e.len) != RV_OK)
            return RV_ERR;
    }
    return RV_OK;
}

/* zset ziplist/listpack items (member, score, ...): scores into the members' `score` */
static int
zset_scores(Ctx *c, size_t first)
{
    size_t n = c->n_items - first;
    if (n % 2)
        return RV_BAD;
    Elem *items = c->items + first;
    for (size_t i = 0; i < n; i += 2) {
        Elem *s = &items[i + 1];
        const uint8_t *p = elem_ptr(c, s);
        double v;
        if (s->where == W_TEXT) { /* an integer entry: float(int), set by push_int */
            v = s->score;
        }
        else {
            int r = text_score(p, s->len, &v);
            if (r != RV_OK)
                return r;
        }
        items[i].score = v;
    }
    return RV_OK;
}

/* the value of type `op` at *pos into the items; *kind is its record type */
static int
rd_value(Ctx *c, int op, size_t *pos, int *kind)
{
    uint64_t count;
    int r;
    switch (op) {
    case 0: /* string */
        *kind = K_STRING;
        return rd_strings(c, pos, 1);
    case 1: /* linked list */
        *kind = K_LIST;
        if ((r = rd_count(c, pos, &count)) != RV_OK)
            return r;
        return rd_strings(c, pos, count);
    case 10: /* ziplist list */
        *kind = K_LIST;
        return rd_blob(c, pos, parse_ziplist);
    case 14: /* quicklist of ziplists */
    case 18: /* quicklist 2: listpack and PLAIN nodes */
        *kind = K_LIST;
        if ((r = rd_count(c, pos, &count)) != RV_OK)
            return r;
        for (uint64_t i = 0; i < count; i++) {
            uint64_t container = 2;
            if (op == 18 && (r = rd_count(c, pos, &container)) != RV_OK)
                return r;
            if (container == 1)
                r = rd_strings(c, pos, 1);
            else if (container == 2)
                r = rd_blob(c, pos, op == 18 ? parse_listpack : parse_ziplist);
            else
                r = RV_BAD;
            if (r != RV_OK)
                return r;
        }
        return RV_OK;
    case 2: /* set */
        *kind = K_SET;
        if ((r = rd_count(c, pos, &count)) != RV_OK)
            return r;
        return rd_strings(c, pos, count);
    case 11: /* intset */
        *kind = K_SET;
        return rd_blob(c, pos, parse_intset);
    case 20: /* set listpack */
        *kind = K_SET;
        return rd_blob(c, pos, parse_listpack);
    case 4: /* hash */
        *kind = K_HASH;
        if ((r = rd_count(c, pos, &count)) != RV_OK)
            return r;
        if (count > SIZE_MAX / 4)
            return RV_BAD;
        return rd_strings(c, pos, 2 * count);
    case 13: /* hash ziplist */
    case 16: /* hash listpack */
        *kind = K_HASH;
        if ((r = rd_blob(c, pos, op == 13 ? parse_ziplist : parse_listpack)) != RV_OK)
            return r;
        return c->n_items % 2 ? RV_BAD : RV_OK;
    case 5: /* zset2: member, binary double */
        *kind = K_ZSET;
        if ((r = rd_count(c, pos, &count)) != RV_OK)
            return r;
        for (uint64_t i = 0; i < count; i++) {
            if ((r = rd_strings(c, pos, 1)) != RV_OK)
                return r;
            if (c->end - *pos < 8)
                return RV_MORE;
            uint64_t bits = le64(c->in + *pos);
            double v;
            memcpy(&v, &bits, 8);
            if (isnan(v))
                return RV_BAD;
            *pos += 8;
            c->items[c->n_items - 1].score = v;
            if (push_item(c, W_INPUT, 0, 0) != RV_OK) /* the score's place */
                return RV_ERR;
        }
        return RV_OK;
    case 12: /* zset ziplist */
    case 17: /* zset listpack */
        *kind = K_ZSET;
        if ((r = rd_blob(c, pos, op == 12 ? parse_ziplist : parse_listpack)) != RV_OK)
            return r;
        return zset_scores(c, 0);
    default:
        return RV_BAD;
    }
}

/* one key-value record at *pos (its type byte): RV_OK with c->out = tag || len || key ||
 * value and *key_obj set, RV_SKIP (dropped), or RV_BAD / RV_MORE / RV_ERR */
static int
rd_record(Ctx *c, size_t *pos, int has_expire, int64_t expire, int has_as_of, int64_t as_of,
          const uint8_t *tag, size_t tag_len, PyObject **key_obj)
{
    size_t p = *pos;
    int op = c->in[p++];
    c->arena.n = c->text.n = c->out.n = c->n_items = 0;
    Elem key;
    int r = rd_string(c, &p, &key);
    if (r != RV_OK)
        return r;
    int kind;
    if ((r = rd_value(c, op, &p, &kind)) != RV_OK)
        return r;
    /* duplicates are refused before anything is dropped, as the Python parser does */
    if (kind == K_SET)
        r = sorted_refs(c, c->n_items, 1);
    else if (kind == K_HASH || kind == K_ZSET)
        r = sorted_refs(c, c->n_items / 2, 2);
    if (r != RV_OK)
        return r;
    *pos = p;
    if (kind != K_STRING && c->n_items == 0)
        return RV_SKIP; /* an empty aggregate: redis-server skips it on load */
    if (has_expire && has_as_of && expire < as_of)
        return RV_SKIP; /* already expired: redis-server drops it on load */
    if (key.len > 0xFFFFFFFFu)
        return RV_BAD;
    uint8_t klen[4] = {(uint8_t)(key.len >> 24), (uint8_t)(key.len >> 16),
                       (uint8_t)(key.len >> 8), (uint8_t)key.len};
    const uint8_t *kp = elem_ptr(c, &key);
    if (buf_put(&c->out, tag, tag_len) != RV_OK || buf_put(&c->out, klen, 4) != RV_OK ||
        buf_put(&c->out, kp, key.len) != RV_OK)
        return RV_ERR;
    if ((r = encode_value(c, kind)) != RV_OK)
        return r;
    if (!has_expire)
        r = buf_byte(&c->out, 0xF6);
    else if (expire >= 0)
        r = cbor_head(&c->out, 0x00, (uint64_t)expire);
    else
        r = cbor_head(&c->out, 0x20, (uint64_t)(-(expire + 1)));
    if (r != RV_OK)
        return r;
    *key_obj = PyBytes_FromStringAndSize((const char *)kp, (Py_ssize_t)key.len);
    return *key_obj == NULL ? RV_ERR : RV_OK;
}

/* SHA-256 of p[0:n] appended to c->pairs (see _sha256_evp.h) */
static int
hash_bytes_into(Ctx *c, const uint8_t *p, size_t n)
{
    unsigned char md[32];
    const void *parts[1] = {p};
    if (sha256_parts(md, parts, &n, 1) != 0)
        return RV_ERR;
    return buf_put(&c->pairs, md, 32);
}

static int
parse_optional_i64(PyObject *obj, int *has, int64_t *value)
{
    if (obj == Py_None) {
        *has = 0;
        *value = 0;
        return 0;
    }
    long long v = PyLong_AsLongLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *has = 1;
    *value = v;
    return 0;
}

PyDoc_STRVAR(scan_doc,
"scan(buf, pos, end, expire, as_of, tag, limit) -> (pos, expire, status, keys, pairs)\n\n"
"Parse, encode and hash the records at buf[pos:end] until `limit` live keys are made\n"
"(status 2), the next record runs past `end` (status 1) or the next opcode or record is\n"
"one for the Python parser (status 0). `expire`: the pending expiry (ms) or None, in and\n"
"out; `as_of`: keys that expired before it are dropped (None: none is). `keys`: the keys\n"
"made; `pairs`: their key_hash || record_hash, concatenated. The returned `pos` is where\n"
"the Python parser takes over.");

static PyObject *
scan(PyObject *module, PyObject *args)
{
    Py_buffer view, tag;
    Py_ssize_t pos_arg, end_arg, limit;
    PyObject *expire_obj, *as_of_obj;
    if (!PyArg_ParseTuple(args, "y*nnOOy*n:scan", &view, &pos_arg, &end_arg, &expire_obj,
                          &as_of_obj, &tag, &limit))
        return NULL;
    PyObject *result = NULL, *keys = NULL;
    Ctx c;
    memset(&c, 0, sizeof c);
    int has_expire, has_as_of;
    int64_t expire, as_of;
    if (parse_optional_i64(expire_obj, &has_expire, &expire) < 0 ||
        parse_optional_i64(as_of_obj, &has_as_of, &as_of) < 0)
        goto done;
    if (pos_arg < 0 || end_arg < pos_arg || end_arg > view.len) {
        PyErr_SetString(PyExc_ValueError, "scan: need 0 <= pos <= end <= len(buf)");
        goto done;
    }
    keys = PyList_New(0);
    if (keys == NULL)
        goto done;
    c.in = view.buf;
    c.end = (size_t)end_arg;
    size_t pos = (size_t)pos_arg;
    int status;
    for (;;) {
        if (PyList_GET_SIZE(keys) >= limit) {
            status = ST_FULL;
            break;
        }
        if (pos >= c.end) {
            status = ST_MORE;
            break;
        }
        uint8_t op = c.in[pos];
        if (op == 252 || op == 253) { /* EXPIRETIME_MS, EXPIRETIME (s) */
            size_t width = op == 252 ? 8 : 4;
            if (c.end - pos < width + 1) {
                status = ST_MORE;
                break;
            }
            expire = op == 252 ? sle(c.in + pos + 1, 8) : sle(c.in + pos + 1, 4) * 1000;
            has_expire = 1;
            pos += width + 1;
            continue;
        }
        if (op == 248 || op == 249) { /* IDLE (a length), FREQ (a byte): hints, skipped */
            size_t p = pos + 1;
            int r = RV_OK;
            if (op == 248) {
                uint64_t idle;
                r = rd_count(&c, &p, &idle);
            }
            else if (p >= c.end) {
                r = RV_MORE;
            }
            else {
                p += 1;
            }
            if (r != RV_OK) {
                status = r == RV_MORE ? ST_MORE : ST_STOP;
                break;
            }
            pos = p;
            continue;
        }
        if (op > 20 || op == 3 || op == 6 || op == 7 || op == 8 || op == 9 || op == 15 ||
            op == 19) {
            status = ST_STOP;
            break;
        }
        size_t p = pos;
        PyObject *key = NULL;
        int r = rd_record(&c, &p, has_expire, expire, has_as_of, as_of, tag.buf,
                          (size_t)tag.len, &key);
        if (r == RV_ERR)
            goto done;
        if (r == RV_MORE || r == RV_BAD) {
            status = r == RV_MORE ? ST_MORE : ST_STOP;
            break;
        }
        pos = p;
        has_expire = 0;
        expire = 0;
        if (r == RV_SKIP)
            continue;
        int failed = PyList_Append(keys, key) < 0 ||
                     hash_bytes_into(&c, (const uint8_t *)PyBytes_AS_STRING(key),
                                     (size_t)PyBytes_GET_SIZE(key)) != RV_OK;
        Py_DECREF(key);
        if (failed || hash_bytes_into(&c, c.out.p, c.out.n) != RV_OK)
            goto done;
    }
    PyObject *pairs = PyBytes_FromStringAndSize((const char *)c.pairs.p, (Py_ssize_t)c.pairs.n);
    if (pairs == NULL)
        goto done;
    PyObject *expire_out = has_expire ? PyLong_FromLongLong(expire) : Py_NewRef(Py_None);
    if (expire_out == NULL) {
        Py_DECREF(pairs);
        goto done;
    }
    result = Py_BuildValue("(nNiON)", (Py_ssize_t)pos, expire_out, status, keys, pairs);
done:
    Py_XDECREF(keys);
    free(c.arena.p);
    free(c.text.p);
    free(c.out.p);
    free(c.pairs.p);
    free(c.items);
    free(c.refs);
    PyBuffer_Release(&view);
    PyBuffer_Release(&tag);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"hash_backend", sha256_backend, METH_VARARGS, SHA256_BACKEND_DOC},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_native",
    "The compiled fast path of the RDB fingerprint pass (see _native.c).",
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
        PyModule_AddIntConstant(m, "FULL", ST_FULL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
