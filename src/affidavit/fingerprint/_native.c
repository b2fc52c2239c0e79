/* affidavit.fingerprint._native: index entries assembled in C.
 *
 * packed_entries(pairs, blob, offsets, lengths) returns the bytes IndexWriter.add_many writes
 * for keys given packed (key i is blob[offsets[i] : offsets[i] + lengths[i]]): for each key,
 * its 64-byte pair (key_hash || record_hash, taken from `pairs` in order), then the key field
 * `u16be(len(key)) || key`, a key longer than `prefix_max` truncated to its prefix with the
 * 0x8000 flag as the Python path does; take_keys(keys,
 * order) packs keys[order[0]], keys[order[1]], ... into one blob plus their int32 lengths (the
 * accumulator's sorted runs). Both check every index, offset and length against the buffers
 * they address before copying; integers are read with memcpy (no alignment assumed).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PAIR_SIZE 64

static PyObject *
packed_entries(PyObject *self, PyObject *args)
{
    Py_buffer pairs, blob, offsets, lengths;
    Py_ssize_t prefix_max;
    if (!PyArg_ParseTuple(args, "y*y*y*y*n", &pairs, &blob, &offsets, &lengths, &prefix_max))
        return NULL;
    PyObject *result = NULL;
    if (prefix_max < 0 || prefix_max > 0x7FFF) {
        PyErr_SetString(PyExc_ValueError, "prefix_max must be within 0..32767");
        goto done;
    }
    if (pairs.len % PAIR_SIZE != 0) {
        PyErr_SetString(PyExc_ValueError, "pairs is not a whole number of pairs");
        goto done;
    }
    Py_ssize_t n = pairs.len / PAIR_SIZE;
    if (offsets.len != n * (Py_ssize_t)sizeof(int64_t)
        || lengths.len != n * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "pairs, offsets and lengths disagree in number");
        goto done;
    }
    const char *offs = (const char *)offsets.buf;
    const char *lens = (const char *)lengths.buf;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t off;
        int32_t len;
        memcpy(&off, offs + i * (Py_ssize_t)sizeof(int64_t), sizeof off);
        memcpy(&len, lens + i * (Py_ssize_t)sizeof(int32_t), sizeof len);
        if (len < 0 || off < 0 || off > (int64_t)blob.len
            || (int64_t)len > (int64_t)blob.len - off) {
            PyErr_SetString(PyExc_ValueError, "a key lies outside the blob");
            goto done;
        }
        Py_ssize_t kept = (Py_ssize_t)len > prefix_max ? prefix_max : (Py_ssize_t)len;
        Py_ssize_t entry = PAIR_SIZE + 2 + kept;
        if (total > PY_SSIZE_T_MAX - entry) {
            PyErr_NoMemory();
            goto done;
        }
        total += entry;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        goto done;
    char *out = PyBytes_AS_STRING(result);
    const char *src = (const char *)pairs.buf;
    const char *keys = (const char *)blob.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t off;
        int32_t len;
        memcpy(&off, offs + i * (Py_ssize_t)sizeof(int64_t), sizeof off);
        memcpy(&len, lens + i * (Py_ssize_t)sizeof(int32_t), sizeof len);
        Py_ssize_t kept = (Py_ssize_t)len > prefix_max ? prefix_max : (Py_ssize_t)len;
        Py_ssize_t field = (Py_ssize_t)len > prefix_max ? (prefix_max | 0x8000) : kept;
        memcpy(out, src + i * PAIR_SIZE, PAIR_SIZE);
        out += PAIR_SIZE;
        *out++ = (char)((field >> 8) & 0xFF);
        *out++ = (char)(field & 0xFF);
        memcpy(out, keys + off, (size_t)kept);
        out += kept;
    }
done:
    PyBuffer_Release(&pairs);
    PyBuffer_Release(&blob);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&lengths);
    return result;
}

static PyObject *
take_keys(PyObject *self, PyObject *args)
{
    PyObject *keys;
    Py_buffer order;
    if (!PyArg_ParseTuple(args, "O!y*", &PyList_Type, &keys, &order))
        return NULL;
    PyObject *blob = NULL, *lengths = NULL, *result = NULL;
    if (order.len % (Py_ssize_t)sizeof(int64_t) != 0) {
        PyErr_SetString(PyExc_ValueError, "order is not a whole number of int64");
        goto done;
    }
    Py_ssize_t n = order.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t count = PyList_GET_SIZE(keys);
    const char *idx = (const char *)order.buf;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t k;
        memcpy(&k, idx + i * (Py_ssize_t)sizeof(int64_t), sizeof k);
        if (k < 0 || k >= (int64_t)count) {
            PyErr_SetString(PyExc_IndexError, "an order index is outside the keys");
            goto done;
        }
        PyObject *key = PyList_GET_ITEM(keys, (Py_ssize_t)k);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "keys must be bytes");
            goto done;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(key);
        if (len > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "a key is longer than 2**31 - 1 bytes");
            goto done;
        }
        if (total > PY_SSIZE_T_MAX - len) {
            PyErr_NoMemory();
            goto done;
        }
        total += len;
    }
    if (n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(int32_t)) {
        PyErr_NoMemory();
        goto done;
    }
    blob = PyBytes_FromStringAndSize(NULL, total);
    if (blob == NULL)
        goto done;
    lengths = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int32_t));
    if (lengths == NULL)
        goto done;
    /* Nothing above ran Python code, so the list and its items are as checked. */
    char *out = PyBytes_AS_STRING(blob);
    char *lens = PyBytes_AS_STRING(lengths);
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t k;
        memcpy(&k, idx + i * (Py_ssize_t)sizeof(int64_t), sizeof k);
        PyObject *key = PyList_GET_ITEM(keys, (Py_ssize_t)k);
        Py_ssize_t len = PyBytes_GET_SIZE(key);
        int32_t len32 = (int32_t)len;
        memcpy(out, PyBytes_AS_STRING(key), (size_t)len);
        out += len;
        memcpy(lens + i * (Py_ssize_t)sizeof(int32_t), &len32, sizeof len32);
    }
    result = PyTuple_Pack(2, blob, lengths);
done:
    Py_XDECREF(blob);
    Py_XDECREF(lengths);
    PyBuffer_Release(&order);
    return result;
}

PyDoc_STRVAR(packed_entries_doc,
"packed_entries(pairs, blob, offsets, lengths, prefix_max) -> bytes\n\n"
"The index entries of the keys blob[offsets[i] : offsets[i] + lengths[i]] (offsets native\n"
"int64, lengths native int32) with their 64-byte pairs from `pairs`: pair || u16be(len) ||\n"
"key, a key longer than prefix_max cut to it with the length field prefix_max | 0x8000.");

PyDoc_STRVAR(take_keys_doc,
"take_keys(keys, order) -> (blob, lengths)\n\n"
"keys[order[0]] + keys[order[1]] + ... (`keys` a list of bytes, `order` native int64\n"
"indexes) and the native int32 length of each, as bytes.");

static PyMethodDef methods[] = {
    {"packed_entries", packed_entries, METH_VARARGS, packed_entries_doc},
    {"take_keys", take_keys, METH_VARARGS, take_keys_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_native",
    "Index entries assembled in C (see _native.c).",
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
    return PyModule_Create(&module_def);
}
