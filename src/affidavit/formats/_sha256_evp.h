/* SHA-256 for the compiled fast paths (rdb/_native.c, bson_codec/_native.c): one copy of the
 * lookup, included by each module (each gets its own static state).
 *
 * No hash code here: SHA-256 is OpenSSL's EVP digest from the very libcrypto that Python's
 * hashlib loaded, found with dlsym, with the algorithm fetched and the context made once;
 * when that is not there, hashlib.sha256 through the C API. The functions run with the GIL
 * held, so no two calls share the one context at once; a caller that releases the GIL takes
 * a context of its own (sha256_private_ctx) and calls sha256_evp_parts.
 *
 * Use: call sha256_setup() once from the module's init (it imports hashlib first, so that
 * its libcrypto is loaded), then sha256_parts(); sha256_backend() is the hash_backend()
 * toggle of the tests.
 */
#ifndef AFFIDAVIT_SHA256_EVP_H
#define AFFIDAVIT_SHA256_EVP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

static PyObject *sha256_ctor = NULL; /* hashlib.sha256 */
static PyObject *str_digest = NULL;
static PyObject *str_update = NULL;

/* OpenSSL's EVP digest functions (same signatures in OpenSSL 1.1 and 3), resolved at import
 * in the libcrypto already loaded by hashlib (RTLD_NOLOAD: never another copy). SHA-256 is
 * fetched once (EVP_MD_fetch, OpenSSL 3; EVP_sha256 otherwise) and one context is re-used. */
typedef void *(*md_fetch_fn)(void *libctx, const char *algorithm, const char *properties);
typedef const void *(*md_get_fn)(void);
typedef void *(*ctx_new_fn)(void);
typedef void (*ctx_free_fn)(void *ctx);
typedef int (*init_fn)(void *ctx, const void *type, void *impl);
typedef int (*update_fn)(void *ctx, const void *data, size_t count);
typedef int (*final_fn)(void *ctx, unsigned char *md, unsigned int *size);
static init_fn evp_init = NULL;
static update_fn evp_update = NULL;
static final_fn evp_final = NULL;
static ctx_new_fn evp_ctx_new = NULL;
static ctx_free_fn evp_ctx_free = NULL;
static const void *evp_sha256 = NULL;
static void *evp_ctx = NULL;
static int use_evp = 0;

static void
find_openssl(void)
{
    static const char *const names[] = {"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *lib = dlopen(names[i], RTLD_NOW | RTLD_NOLOAD);
        if (lib == NULL)
            continue;
        md_fetch_fn fetch = (md_fetch_fn)dlsym(lib, "EVP_MD_fetch");
        md_get_fn get = (md_get_fn)dlsym(lib, "EVP_sha256");
        ctx_new_fn ctx_new = (ctx_new_fn)dlsym(lib, "EVP_MD_CTX_new");
        init_fn init = (init_fn)dlsym(lib, "EVP_DigestInit_ex");
        update_fn update = (update_fn)dlsym(lib, "EVP_DigestUpdate");
        final_fn final = (final_fn)dlsym(lib, "EVP_DigestFinal_ex");
        ctx_free_fn ctx_free = (ctx_free_fn)dlsym(lib, "EVP_MD_CTX_free");
        const void *md = NULL;
        if (fetch != NULL)
            md = fetch(NULL, "SHA256", NULL); /* held for the life of the process */
        else if (get != NULL)
            md = get();
        void *ctx = md != NULL && ctx_new != NULL ? ctx_new() : NULL;
        if (ctx != NULL && init != NULL && update != NULL && final != NULL) {
            evp_init = init;
            evp_update = update;
            evp_final = final;
            evp_ctx_new = ctx_new;
            evp_ctx_free = ctx_free; /* may be NULL: then no private contexts (see below) */
            evp_sha256 = md;
            evp_ctx = ctx;
            use_evp = 1;
            return; /* the library stays loaded for the life of the process, as for hashlib */
        }
        dlclose(lib);
    }
}

/* once, from the module's init: hashlib.sha256 (the fallback), then OpenSSL; -1 with an
 * exception set on failure */
static int
sha256_setup(void)
{
    PyObject *hashlib = PyImport_ImportModule("hashlib");
    if (hashlib == NULL)
        return -1;
    sha256_ctor = PyObject_GetAttrString(hashlib, "sha256");
    Py_DECREF(hashlib);
    if (sha256_ctor == NULL)
        return -1;
    str_digest = PyUnicode_InternFromString("digest");
    str_update = PyUnicode_InternFromString("update");
    if (str_digest == NULL || str_update == NULL)
        return -1;
    find_openssl(); /* after hashlib: its libcrypto is loaded by now */
    return 0;
}

/* OpenSSL's SHA-256 over the concatenation of `n` parts with context `ctx`, without touching
 * Python (callable with the GIL released, each thread with its own context): 0, or -1. */
static inline int
sha256_evp_parts(void *ctx, unsigned char out[32], const void *const *parts, const size_t *lens,
                 size_t n)
{
    unsigned int size = 0;
    if (evp_init(ctx, evp_sha256, NULL) != 1)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (evp_update(ctx, parts[i], lens[i]) != 1)
            return -1;
    return evp_final(ctx, out, &size) == 1 && size == 32 ? 0 : -1;
}

/* A context of its own for a caller that releases the GIL, or NULL (OpenSSL not in use, or
 * no way to free one): that caller then keeps the GIL and uses sha256_parts. */
static inline void *
sha256_private_ctx(void)
{
    return use_evp && evp_ctx_new != NULL && evp_ctx_free != NULL ? evp_ctx_new() : NULL;
}

static inline void
sha256_private_ctx_free(void *ctx)
{
    if (ctx != NULL)
        evp_ctx_free(ctx);
}

/* SHA-256 over the concatenation of `n` parts into out[32]: 0, or -1 with an exception set.
 * OpenSSL's digest when found, else a hashlib.sha256 object fed each part (as memoryviews:
 * no copy). */
static int
sha256_parts(unsigned char out[32], const void *const *parts, const size_t *lens, size_t n)
{
    if (use_evp) {
        if (sha256_evp_parts(evp_ctx, out, parts, lens, n) == 0)
            return 0;
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
        return -1;
    }
    PyObject *h = PyObject_CallNoArgs(sha256_ctor);
    if (h == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > (size_t)PY_SSIZE_T_MAX) {
            Py_DECREF(h);
            PyErr_NoMemory();
            return -1;
        }
        PyObject *view = PyMemoryView_FromMemory((char *)parts[i], (Py_ssize_t)lens[i],
                                                 PyBUF_READ);
        if (view == NULL) {
            Py_DECREF(h);
            return -1;
        }
        PyObject *r = PyObject_CallMethodOneArg(h, str_update, view);
        Py_DECREF(view);
        if (r == NULL) {
            Py_DECREF(h);
            return -1;
        }
        Py_DECREF(r);
    }
    PyObject *digest = PyObject_CallMethodNoArgs(h, str_digest);
    Py_DECREF(h);
    if (digest == NULL)
        return -1;
    int r = -1;
    if (PyBytes_Check(digest) && PyBytes_GET_SIZE(digest) == 32) {
        memcpy(out, PyBytes_AS_STRING(digest), 32);
        r = 0;
    }
    else {
        PyErr_SetString(PyExc_RuntimeError, "hashlib.sha256 gave an unexpected digest");
    }
    Py_DECREF(digest);
    return r;
}

/* hash_backend([hashlib_only]): which SHA-256 sha256_parts uses, switched for tests */
static PyObject *
sha256_backend(PyObject *self, PyObject *args)
{
    int hashlib_only = -1;
    if (!PyArg_ParseTuple(args, "|p", &hashlib_only))
        return NULL;
    if (hashlib_only != -1)
        use_evp = !hashlib_only && evp_ctx != NULL;
    return PyUnicode_FromString(use_evp ? "openssl" : "hashlib");
}

#define SHA256_BACKEND_DOC                                                                     \
    "hash_backend([hashlib_only]) -> 'openssl' | 'hashlib'\n\n"                                \
    "Which SHA-256 this module uses: OpenSSL's EVP digest from the libcrypto hashlib loaded,\n" \
    "or hashlib.sha256. hashlib_only=True switches to hashlib (tests compare both), False\n"   \
    "back to OpenSSL when it was found."

#endif
