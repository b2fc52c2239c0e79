/* affidavit.fingerprint._native: index entries assembled in C.
 *
 * index_entries(pairs, keys) returns the bytes IndexWriter.add_many writes: for each key, its
 * 64-byte pair (key_hash || record_hash, taken from `pairs` in order), then the key field
 * `u16be(len(key)) || key`. Keys longer than `prefix_max` are not handled here (the caller
 * checks and uses the Python path, which truncates them with its flag). Every length is
 * checked before the output is sized; nothing is read outside `pairs` or a key.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define PAIR_SIZE 64

static PyObject *
index_entries(PyObject *self, PyObject *args)
{
    Py_buffer pairs;
    PyObject *keys;
    Py_ssize_t prefix_max;
    if (!PyArg_ParseTuple(args, "y*O!n", &pairs, &PyList_Type, &keys, &prefix_max))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (prefix_max < 0 || prefix_max > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "prefix_max must be within 0..65535");
        goto done;
    }
    if (n > PY_SSIZE_T_MAX / PAIR_SIZE || pairs.len != n * PAIR_SIZE) {
        PyErr_SetString(PyExc_ValueError, "pairs and keys disagree in number");
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "keys must be bytes");
            goto done;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(key);
        if (len > prefix_max) {
            PyErr_SetString(PyExc_ValueError, "a key is longer than prefix_max");
            goto done;
        }
        Py_ssize_t entry = PAIR_SIZE + 2 + len;
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
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        Py_ssize_t len = PyBytes_GET_SIZE(key);
        memcpy(out, src + i * PAIR_SIZE, PAIR_SIZE);
        out += PAIR_SIZE;
        *out++ = (char)((len >> 8) & 0xFF);
        *out++ = (char)(len & 0xFF);
        memcpy(out, PyBytes_AS_STRING(key), (size_t)len);
        out += len;
    }
done:
    PyBuffer_Release(&pairs);
    return result;
}

PyDoc_STRVAR(index_entries_doc,
"index_entries(pairs, keys, prefix_max) -> bytes\n\n"
"The index entries of `keys` (a list of bytes, none longer than prefix_max) with their\n"
"64-byte pairs from `pairs`: pair || u16be(len(key)) || key, each, back to back.");

static PyMethodDef methods[] = {
    {"index_entries", index_entries, METH_VARARGS, index_entries_doc},
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
