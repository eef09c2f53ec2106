/* classifier._native: the per-message numeric core of classifier.model.FastScorer, compiled.
 *
 * Scorer(rows, intercept, tf, n_classes, word_map, pair_map, char_map, contact_map, word_hi,
 *        char_lo, char_hi[, sound_map, sound_ids, syllables, sound_lo, sound_hi]) is built once per
 * loaded model; Scorer.score(words, text, contacts) does, in one call, what FastScorer._counted
 * and FastScorer._score do in Python: the vocabulary columns of the word n-grams, character
 * n-grams, contact tokens and sound n-grams (unique, in order of first appearance), sublinear tf x idf, the L2 norm of each vectorizer's part, the dot with the
 * coefficient rows, the intercept and the softmax (a sigmoid for a binary model). The result keeps
 * the columns and values so that Scored.top(class, k) can rank the features that pushed hardest
 * toward a label the way FastScorer._top does (value x weight descending, ties in order of first
 * appearance, nothing that is not positive).
 *
 * Lookups: word unigrams in the Python dict (PyDict_GetItem on a str whose hash rjieba's str
 * already caches); word bigrams in a table keyed by the two tokens' hashes, checked against the
 * tokens themselves (no "a b" string built); character n-grams (at most 3 code points) in a table
 * keyed by the code points + 1 packed 21 bits each, which holds every gram exactly (U+0000, U+FFFF,
 * lone surrogates and astral characters included); sound n-grams the same way over token ids (a
 * Han character's toneless syllable: one letter as that letter, longer ones 0x110000 + an index;
 * any other character its code point), so "啊" and "a" are one token, as in the vectorizer.
 *
 * Everything a call needs lives in per-call memory, the Scorer is not changed after it is built,
 * and the GIL is held throughout (the tokens are copied into tuples first, so not even a map key's
 * own __eq__ can free them mid-call), so calls from several threads are safe. Every index read from Python (dict values) is bounds-checked.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint64_t key; /* 0: empty */
    Py_ssize_t col;
} CharSlot;

typedef struct {
    Py_hash_t ha, hb;
    PyObject *a, *b; /* owned; NULL: empty */
    Py_ssize_t col;
} PairSlot;

typedef struct {
    PyObject_HEAD
    Py_buffer rows; /* float64 [n_cols][width]: idf, then the coefficient row */
    int have_rows;
    const double *rowp;
    Py_ssize_t n_cols, width, n_out, n_classes;
    double *intercept; /* n_out */
    double *tf;        /* 1 + log(count) for count < tf_len, numpy's own values */
    Py_ssize_t tf_len;
    PyObject *word_map, *contact_map; /* dict str -> column */
    CharSlot *chars;
    size_t char_mask;
    PairSlot *pairs;
    size_t pair_mask;
    int word_hi, char_lo, char_hi;
    /* sound n-grams (toneless syllables, classifier.features.SoundTokenizer): keyed like the
     * character n-grams, with each character's token id instead of its code point */
    CharSlot *sounds;
    size_t sound_mask;
    uint32_t *sound_ids; /* per BMP code point its token id; other code points are their own */
    int sound_lo, sound_hi; /* 0, 0: no sound vectorizer */
    int ready; /* __init__ completed: a failed one leaves the object unusable */
} Scorer;

typedef struct {
    PyObject_HEAD
    Scorer *owner; /* its rows give the weights for top() */
    PyObject *probs; /* list of float, in class order */
    Py_ssize_t n;
    int32_t *cols;
    double *vals;
} Scored;

static PyTypeObject ScorerType;
static PyTypeObject ScoredType;

/* --- hashing ---------------------------------------------------------------------------------- */

static inline size_t mix64(uint64_t x) {
    /* splitmix64's finalizer: keys that differ in a few bits land far apart */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (size_t)x;
}

static size_t table_size(Py_ssize_t n) {
    size_t size = 16;
    while (size < (size_t)n * 2) size <<= 1;
    return size;
}

/* Equal str objects: the same canonical kind (PEP 393), length and code units. */
static inline int str_eq(PyObject *a, PyObject *b) {
    if (a == b) return 1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    if (n != PyUnicode_GET_LENGTH(b) || PyUnicode_KIND(a) != PyUnicode_KIND(b)) return 0;
    return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * PyUnicode_KIND(a)) == 0;
}

static inline int has_space(PyObject *s) {
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyUnicode_READ(kind, data, i) == ' ') return 1;
    return 0;
}

/* str.isspace(): not empty, every character whitespace */
static inline int is_space_token(PyObject *s) {
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (n == 0) return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i))) return 0;
    return 1;
}

static inline uint64_t char_key(const Py_UCS4 *cp, int n) {
    uint64_t key = 0;
    for (int j = 0; j < n; j++) key |= (uint64_t)(cp[j] + 1) << (21 * j);
    return key;
}

static inline size_t pair_hash(Py_hash_t ha, Py_hash_t hb) {
    return mix64((uint64_t)ha * 0x9e3779b97f4a7c15ULL ^ (uint64_t)hb);
}

/* -1: not in the table; -2: error (an unhashable token cannot happen: every token is a str) */
static inline Py_ssize_t pair_lookup(const Scorer *self, PyObject *a, PyObject *b) {
    Py_hash_t ha = PyObject_Hash(a), hb = PyObject_Hash(b);
    if (ha == -1 || hb == -1) return -2;
    size_t i = pair_hash(ha, hb) & self->pair_mask;
    for (;;) {
        const PairSlot *s = &self->pairs[i];
        if (s->a == NULL) return -1;
        if (s->ha == ha && s->hb == hb && str_eq(s->a, a) && str_eq(s->b, b)) return s->col;
        i = (i + 1) & self->pair_mask;
    }
}

/* A column from a dict value: -1 when absent, -2 on error (a value that is no valid column). */
static inline Py_ssize_t dict_col(const Scorer *self, PyObject *map, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(map, key);
    if (v == NULL) return PyErr_Occurred() ? -2 : -1;
    Py_ssize_t col = PyLong_AsSsize_t(v);
    if (col == -1 && PyErr_Occurred()) return -2;
    if (col < 0 || col >= self->n_cols) {
        PyErr_Format(PyExc_ValueError, "column %zd out of range", col);
        return -2;
    }
    return col;
}

/* --- Scorer ----------------------------------------------------------------------------------- */

static double *floats_of(PyObject *seq, Py_ssize_t *len, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    double *out = PyMem_Malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (out[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(fast);
            PyMem_Free(out);
            return NULL;
        }
    }
    Py_DECREF(fast);
    *len = n;
    return out;
}

static int check_map(Scorer *self, PyObject *map, const char *what) {
    if (!PyDict_CheckExact(map)) {
        PyErr_Format(PyExc_TypeError, "%s must be a dict", what);
        return -1;
    }
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(map, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k)) {
            PyErr_Format(PyExc_TypeError, "%s: keys must be str", what);
            return -1;
        }
        Py_ssize_t col = PyLong_AsSsize_t(v);
        if (col == -1 && PyErr_Occurred()) return -1;
        if (col < 0 || col >= self->n_cols) {
            PyErr_Format(PyExc_ValueError, "%s: column %zd out of range", what, col);
            return -1;
        }
    }
    return 0;
}

static void gram_insert(CharSlot *table, size_t mask, uint64_t key, Py_ssize_t col) {
    size_t i = mix64(key) & mask;
    while (table[i].key != 0 && table[i].key != key) i = (i + 1) & mask;
    table[i].key = key;
    table[i].col = col;
}

static inline Py_ssize_t gram_lookup(const CharSlot *table, size_t mask, uint64_t key) {
    size_t i = mix64(key) & mask;
    for (;;) {
        const CharSlot *s = &table[i];
        if (s->key == key) return s->col;
        if (s->key == 0) return -1;
        i = (i + 1) & mask;
    }
}

/* The sound terms ("jian zhi 5": tokens joined by a space) as keys of their tokens' ids: a token
 * of one character is that code point, a longer one a syllable's id (`syllables`). A term with a
 * token that is neither, or with more than 3 tokens, can match no text and is left out. */
static int build_sounds(Scorer *self, PyObject *map, PyObject *syllables) {
    if (check_map(self, map, "sound_map") < 0) return -1;
    if (!PyDict_CheckExact(syllables)) {
        PyErr_SetString(PyExc_TypeError, "syllables must be a dict");
        return -1;
    }
    size_t size = table_size(PyDict_GET_SIZE(map));
    self->sounds = PyMem_Calloc(size, sizeof(CharSlot));
    if (self->sounds == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->sound_mask = size - 1;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(map, &pos, &k, &v)) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(k), start = 0;
        Py_UCS4 ids[3];
        int n = 0, ok = 1;
        for (Py_ssize_t i = 0; i <= len && ok; i++) {
            if (i < len && PyUnicode_READ_CHAR(k, i) != ' ') continue;
            Py_ssize_t tlen = i - start;
            if (tlen == 0 || n == 3) {
                ok = 0;
            } else if (tlen == 1) {
                ids[n++] = PyUnicode_READ_CHAR(k, start);
            } else {
                PyObject *tok = PyUnicode_Substring(k, start, i);
                if (tok == NULL) return -1;
                PyObject *id = PyDict_GetItemWithError(syllables, tok);
                Py_DECREF(tok);
                if (id == NULL) {
                    if (PyErr_Occurred()) return -1;
                    ok = 0;
                } else {
                    long x = PyLong_AsLong(id);
                    if (x == -1 && PyErr_Occurred()) return -1;
                    if (x < 0x110000 || x >= 0x1FFFFF) {
                        PyErr_SetString(PyExc_ValueError, "syllables: ids must lie in [0x110000, 0x1FFFFF)");
                        return -1;
                    }
                    ids[n++] = (Py_UCS4)x;
                }
            }
            start = i + 1;
        }
        if (ok && n >= self->sound_lo && n <= self->sound_hi)
            gram_insert(self->sounds, self->sound_mask, char_key(ids, n), PyLong_AsSsize_t(v));
    }
    return 0;
}

static int build_chars(Scorer *self, PyObject *map) {
    if (check_map(self, map, "char_map") < 0) return -1;
    Py_ssize_t n = PyDict_GET_SIZE(map);
    size_t size = table_size(n);
    self->chars = PyMem_Calloc(size, sizeof(CharSlot));
    if (self->chars == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->char_mask = size - 1;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(map, &pos, &k, &v)) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(k);
        if (len < 1 || len > 3) {
            PyErr_SetString(PyExc_ValueError, "char_map: grams must be 1 to 3 characters long");
            return -1;
        }
        Py_UCS4 cp[3];
        for (Py_ssize_t j = 0; j < len; j++) cp[j] = PyUnicode_READ_CHAR(k, j);
        gram_insert(self->chars, self->char_mask, char_key(cp, (int)len), PyLong_AsSsize_t(v));
    }
    return 0;
}

static int build_pairs(Scorer *self, PyObject *map) {
    if (!PyDict_CheckExact(map)) {
        PyErr_SetString(PyExc_TypeError, "pair_map must be a dict");
        return -1;
    }
    Py_ssize_t n = PyDict_GET_SIZE(map);
    size_t size = table_size(n);
    self->pairs = PyMem_Calloc(size, sizeof(PairSlot));
    if (self->pairs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->pair_mask = size - 1;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(map, &pos, &k, &v)) {
        if (!PyTuple_CheckExact(k) || PyTuple_GET_SIZE(k) != 2 || !PyUnicode_CheckExact(PyTuple_GET_ITEM(k, 0)) ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(k, 1))) {
            PyErr_SetString(PyExc_TypeError, "pair_map: keys must be pairs of str");
            return -1;
        }
        PyObject *a = PyTuple_GET_ITEM(k, 0), *b = PyTuple_GET_ITEM(k, 1);
        Py_ssize_t col = PyLong_AsSsize_t(v);
        if (col == -1 && PyErr_Occurred()) return -1;
        if (col < 0 || col >= self->n_cols) {
            PyErr_Format(PyExc_ValueError, "pair_map: column %zd out of range", col);
            return -1;
        }
        Py_hash_t ha = PyObject_Hash(a), hb = PyObject_Hash(b);
        if (ha == -1 || hb == -1) return -1;
        size_t i = pair_hash(ha, hb) & self->pair_mask;
        while (self->pairs[i].a != NULL &&
               !(self->pairs[i].ha == ha && self->pairs[i].hb == hb && str_eq(self->pairs[i].a, a) &&
                 str_eq(self->pairs[i].b, b)))
            i = (i + 1) & self->pair_mask;
        PairSlot *s = &self->pairs[i];
        if (s->a == NULL) {
            Py_INCREF(a);
            Py_INCREF(b);
            s->a = a;
            s->b = b;
            s->ha = ha;
            s->hb = hb;
        }
        s->col = col;
    }
    return 0;
}

static void Scorer_dealloc(Scorer *self) {
    if (self->have_rows) PyBuffer_Release(&self->rows);
    PyMem_Free(self->intercept);
    PyMem_Free(self->tf);
    Py_XDECREF(self->word_map);
    Py_XDECREF(self->contact_map);
    PyMem_Free(self->chars);
    PyMem_Free(self->sounds);
    PyMem_Free(self->sound_ids);
    if (self->pairs != NULL) {
        for (size_t i = 0; i <= self->pair_mask; i++) {
            Py_XDECREF(self->pairs[i].a);
            Py_XDECREF(self->pairs[i].b);
        }
        PyMem_Free(self->pairs);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Scorer_init(Scorer *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"rows",      "intercept", "tf",        "n_classes", "word_map",  "pair_map",
                             "char_map",  "contact_map", "word_hi", "char_lo",   "char_hi",   "sound_map",
                             "sound_ids", "syllables", "sound_lo",  "sound_hi",  NULL};
    PyObject *rows, *intercept, *tf, *word_map, *pair_map, *char_map, *contact_map;
    PyObject *sound_map = Py_None, *sound_ids = Py_None, *syllables = Py_None;
    Py_ssize_t n_classes;
    int word_hi, char_lo, char_hi, sound_lo = 0, sound_hi = 0;
    if (self->have_rows || self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Scorer is already initialized");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOnOOOOiii|OOOii", kwlist, &rows, &intercept, &tf,
                                     &n_classes, &word_map, &pair_map, &char_map, &contact_map, &word_hi,
                                     &char_lo, &char_hi, &sound_map, &sound_ids, &syllables, &sound_lo,
                                     &sound_hi))
        return -1;
    if (word_hi < 1 || word_hi > 2 || char_lo < 1 || char_lo > char_hi || char_hi > 3 || sound_lo < 0 ||
        sound_lo > sound_hi || sound_hi > 3 || (sound_hi && !sound_lo)) {
        PyErr_SetString(PyExc_ValueError, "n-gram ranges beyond word (1, 2), char and sound (1..3)");
        return -1;
    }
    self->sound_lo = sound_lo;
    self->sound_hi = sound_hi;
    self->word_hi = word_hi;
    self->char_lo = char_lo;
    self->char_hi = char_hi;
    if (PyObject_GetBuffer(rows, &self->rows, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    self->have_rows = 1;
    const char *fmt = self->rows.format;
    if (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@') fmt++;
    if (self->rows.ndim != 2 || self->rows.itemsize != 8 || strcmp(fmt, "d") != 0 ||
        self->rows.shape[1] < 2) {
        PyErr_SetString(PyExc_ValueError, "rows must be a C-contiguous float64 matrix, 2 or more wide");
        return -1;
    }
    self->rowp = self->rows.buf;
    self->n_cols = self->rows.shape[0];
    if (self->n_cols > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "more columns than 32-bit indices hold");
        return -1;
    }
    self->width = self->rows.shape[1];
    self->n_out = self->width - 1;
    self->n_classes = n_classes;
    if (!(n_classes == self->n_out && n_classes >= 2) && !(self->n_out == 1 && n_classes == 2)) {
        PyErr_SetString(PyExc_ValueError, "coefficient columns do not match the classes");
        return -1;
    }
    Py_ssize_t n;
    if ((self->intercept = floats_of(intercept, &n, "intercept must be a sequence")) == NULL) return -1;
    if (n != self->n_out) {
        PyErr_SetString(PyExc_ValueError, "intercept does not match the coefficients");
        return -1;
    }
    if ((self->tf = floats_of(tf, &self->tf_len, "tf must be a sequence")) == NULL) return -1;
    if (self->tf_len < 2) {
        PyErr_SetString(PyExc_ValueError, "tf table too short");
        return -1;
    }
    if (check_map(self, word_map, "word_map") < 0 || check_map(self, contact_map, "contact_map") < 0)
        return -1;
    Py_INCREF(word_map);
    self->word_map = word_map;
    Py_INCREF(contact_map);
    self->contact_map = contact_map;
    if (build_chars(self, char_map) < 0 || build_pairs(self, pair_map) < 0) return -1;
    if (sound_hi) {
        Py_buffer ids;
        if (PyObject_GetBuffer(sound_ids, &ids, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
        const char *f = ids.format;
        if (f[0] == '<' || f[0] == '=' || f[0] == '@') f++;
        int good = ids.ndim == 1 && ids.itemsize == 4 && (strcmp(f, "I") == 0 || strcmp(f, "L") == 0) &&
                   ids.shape[0] == 0x10000;
        if (good) {
            self->sound_ids = PyMem_Malloc(sizeof(uint32_t) * 0x10000);
            if (self->sound_ids == NULL) {
                PyBuffer_Release(&ids);
                PyErr_NoMemory();
                return -1;
            }
            memcpy(self->sound_ids, ids.buf, sizeof(uint32_t) * 0x10000);
            for (Py_ssize_t i = 0; i < 0x10000 && good; i++) good = self->sound_ids[i] < 0x1FFFFF;
        }
        PyBuffer_Release(&ids);
        if (!good) {
            PyErr_SetString(PyExc_ValueError, "sound_ids must be 65,536 uint32 ids below 0x1FFFFF");
            return -1;
        }
        if (build_sounds(self, sound_map, syllables) < 0) return -1;
    }
    self->ready = 1;
    return 0;
}

/* --- one message ------------------------------------------------------------------------------ */

/* Columns counted in order of first appearance: an open-addressing table column -> slot. */
typedef struct {
    int32_t *slot_col; /* -1: empty */
    int32_t *slot_idx;
    size_t mask;
    int32_t *cols;
    int32_t *counts;
    Py_ssize_t n;
} Counter;

static inline void count_col(Counter *c, Py_ssize_t col) {
    size_t i = mix64((uint64_t)col) & c->mask;
    for (;;) {
        int32_t sc = c->slot_col[i];
        if (sc == (int32_t)col) {
            c->counts[c->slot_idx[i]]++;
            return;
        }
        if (sc < 0) {
            c->slot_col[i] = (int32_t)col;
            c->slot_idx[i] = (int32_t)c->n;
            c->cols[c->n] = (int32_t)col;
            c->counts[c->n] = 1;
            c->n++;
            return;
        }
        i = (i + 1) & c->mask;
    }
}

static int is_exact_str_list(PyObject *list, const char *what) {
    if (!PyList_CheckExact(list)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of str", what);
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(list, i))) {
            PyErr_Format(PyExc_TypeError, "%s must be a list of str", what);
            return 0;
        }
    return 1;
}

#define STACK_BYTES 16384

static PyObject *Scorer_score(Scorer *self, PyObject *args) {
    PyObject *word_list, *text, *contact_list;
    if (!PyArg_ParseTuple(args, "OUO:score", &word_list, &text, &contact_list)) return NULL;
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Scorer is not initialized");
        return NULL;
    }
    if (!is_exact_str_list(word_list, "words") || !is_exact_str_list(contact_list, "contacts")) return NULL;
    /* Tuples of the tokens: the items stay alive and in place whatever a dict lookup might run
     * (a key of another type with its own __eq__, put into a map after the build). */
    PyObject *words = PyList_AsTuple(word_list);
    if (words == NULL) return NULL;
    PyObject *contacts = PyList_AsTuple(contact_list);
    if (contacts == NULL) {
        Py_DECREF(words);
        return NULL;
    }
    Py_ssize_t n_words = PyTuple_GET_SIZE(words), n_contacts = PyTuple_GET_SIZE(contacts);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);

    /* Upper bounds: how many n-grams there can be, so how many distinct columns. */
    Py_ssize_t max_hits = n_words * 2 + n_contacts + 1;
    for (int k = self->char_lo; k <= self->char_hi; k++) max_hits += len;
    for (int k = self->sound_lo; k && k <= self->sound_hi; k++) max_hits += len;
    Py_ssize_t max_unique = max_hits < self->n_cols ? max_hits : self->n_cols;
    size_t tsize = table_size(max_unique);
    size_t need = 2 * sizeof(Py_UCS4) * (size_t)(len + 1) + sizeof(PyObject *) * (size_t)(n_words + 1) +
                  2 * sizeof(int32_t) * tsize + 2 * sizeof(int32_t) * (size_t)max_unique +
                  sizeof(double) * (size_t)(max_unique + self->n_out);
    /* 8-byte alignment for every array carved out of the block below */
    need += 64;
    char stack[STACK_BYTES] __attribute__((aligned(16)));
    char *heap = NULL, *mem = stack;
    if (need > STACK_BYTES) {
        heap = mem = PyMem_Malloc(need);
        if (heap == NULL) {
            Py_DECREF(words);
            Py_DECREF(contacts);
            return PyErr_NoMemory();
        }
    }
    char *p = mem;
#define CARVE(type, count) \
    ((type *)(p = (char *)(((uintptr_t)p + 7) & ~(uintptr_t)7), p += sizeof(type) * (size_t)(count), p - sizeof(type) * (size_t)(count)))
    double *z = CARVE(double, self->n_out);
    double *v = CARVE(double, max_unique);
    Py_UCS4 *cps = CARVE(Py_UCS4, len + 1);
    Py_UCS4 *sids = CARVE(Py_UCS4, len + 1);
    PyObject **kept = CARVE(PyObject *, n_words + 1);
    Counter cnt;
    cnt.slot_col = CARVE(int32_t, tsize);
    cnt.slot_idx = CARVE(int32_t, tsize);
    cnt.cols = CARVE(int32_t, max_unique);
    cnt.counts = CARVE(int32_t, max_unique);
#undef CARVE
    memset(cnt.slot_col, 0xff, sizeof(int32_t) * tsize);
    cnt.mask = tsize - 1;
    cnt.n = 0;
    Scored *out = NULL;
    PyObject *probs = NULL;

    /* The text without whitespace (CharTokenizer's characters; str.split()'s whitespace). */
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (!Py_UNICODE_ISSPACE(ch)) cps[m++] = ch;
    }
    int spaced = m != len;

    /* Word unigrams, then bigrams (scikit-learn's order); whitespace tokens are dropped first. */
    Py_ssize_t n_kept = 0;
    for (Py_ssize_t i = 0; i < n_words; i++) {
        PyObject *t = PyTuple_GET_ITEM(words, i);
        if (spaced && is_space_token(t)) continue;
        kept[n_kept++] = t;
    }
    Py_ssize_t bounds[5];
    int n_bounds = 0;
    bounds[n_bounds++] = 0;
    for (Py_ssize_t i = 0; i < n_kept; i++) {
        Py_ssize_t col = dict_col(self, self->word_map, kept[i]);
        if (col == -2) goto fail;
        if (col >= 0) count_col(&cnt, col);
    }
    if (self->word_hi == 2) {
        for (Py_ssize_t i = 0; i + 1 < n_kept; i++) {
            PyObject *a = kept[i], *b = kept[i + 1];
            Py_ssize_t col;
            if (spaced && (has_space(a) || has_space(b))) {
                /* "a b" with a token that holds a space: not a pair of the table; the joined
                 * string, as scikit-learn makes it */
                PyObject *ab = PyUnicode_FromFormat("%U %U", a, b);
                if (ab == NULL) goto fail;
                col = dict_col(self, self->word_map, ab);
                Py_DECREF(ab);
            } else {
                col = pair_lookup(self, a, b);
            }
            if (col == -2) goto fail;
            if (col >= 0) count_col(&cnt, col);
        }
    }
    /* Character n-grams: all 1-grams left to right, then all 2-grams, ... */
    bounds[n_bounds++] = cnt.n;
    for (int k = self->char_lo; k <= self->char_hi; k++)
        for (Py_ssize_t i = 0; i + k <= m; i++) {
            Py_ssize_t col = gram_lookup(self->chars, self->char_mask, char_key(cps + i, k));
            if (col >= 0) count_col(&cnt, col);
        }
    bounds[n_bounds++] = cnt.n;
    for (Py_ssize_t i = 0; i < n_contacts; i++) {
        Py_ssize_t col = dict_col(self, self->contact_map, PyTuple_GET_ITEM(contacts, i));
        if (col == -2) goto fail;
        if (col >= 0) count_col(&cnt, col);
    }
    bounds[n_bounds++] = cnt.n;
    /* Sound n-grams: the same windows over each character's token id. */
    if (self->sound_hi) {
        for (Py_ssize_t i = 0; i < m; i++) sids[i] = cps[i] < 0x10000 ? self->sound_ids[cps[i]] : cps[i];
        for (int k = self->sound_lo; k <= self->sound_hi; k++)
            for (Py_ssize_t i = 0; i + k <= m; i++) {
                Py_ssize_t col = gram_lookup(self->sounds, self->sound_mask, char_key(sids + i, k));
                if (col >= 0) count_col(&cnt, col);
            }
    }
    bounds[n_bounds++] = cnt.n;

    /* tf x idf, then each vectorizer's part to unit length */
    const double *rows = self->rowp;
    Py_ssize_t width = self->width;
    for (Py_ssize_t i = 0; i < cnt.n; i++) {
        int32_t c = cnt.counts[i];
        double tf = c < self->tf_len ? self->tf[c] : log((double)c) + 1.0;
        v[i] = rows[(Py_ssize_t)cnt.cols[i] * width] * tf;
    }
    for (int b = 0; b + 1 < n_bounds; b++) {
        Py_ssize_t start = bounds[b], end = bounds[b + 1];
        if (start == end) continue;
        double ss = 0.0;
        for (Py_ssize_t i = start; i < end; i++) ss += v[i] * v[i];
        double norm = sqrt(ss);
        for (Py_ssize_t i = start; i < end; i++) v[i] /= norm;
    }
    /* the linear model, then the softmax (a sigmoid for one column) */
    Py_ssize_t n_out = self->n_out;
    for (Py_ssize_t k = 0; k < n_out; k++) z[k] = 0.0;
    for (Py_ssize_t i = 0; i < cnt.n; i++) {
        const double *w = rows + (Py_ssize_t)cnt.cols[i] * width + 1;
        double x = v[i];
        for (Py_ssize_t k = 0; k < n_out; k++) z[k] += x * w[k];
    }
    for (Py_ssize_t k = 0; k < n_out; k++) z[k] = self->intercept[k] + z[k];
    probs = PyList_New(self->n_classes);
    if (probs == NULL) goto fail;
    if (n_out == 1) {
        double p1 = 1.0 / (1.0 + exp(-z[0]));
        PyObject *a = PyFloat_FromDouble(1.0 - p1), *b = PyFloat_FromDouble(p1);
        if (a) PyList_SET_ITEM(probs, 0, a);
        if (b) PyList_SET_ITEM(probs, 1, b);
        if (!a || !b) goto fail;
    } else {
        double top = z[0], total = 0.0; /* max(z) as Python's max() takes it */
        for (Py_ssize_t k = 1; k < n_out; k++)
            if (z[k] > top) top = z[k];
        for (Py_ssize_t k = 0; k < n_out; k++) {
            z[k] = exp(z[k] - top);
            total += z[k];
        }
        for (Py_ssize_t k = 0; k < n_out; k++) {
            PyObject *f = PyFloat_FromDouble(z[k] / total);
            if (f == NULL) goto fail;
            PyList_SET_ITEM(probs, k, f);
        }
    }

    out = PyObject_New(Scored, &ScoredType);
    if (out == NULL) goto fail;
    out->owner = NULL;
    out->probs = NULL;
    out->n = cnt.n;
    out->cols = NULL;
    out->vals = NULL;
    if (cnt.n) {
        out->cols = PyMem_Malloc(sizeof(int32_t) * (size_t)cnt.n);
        out->vals = PyMem_Malloc(sizeof(double) * (size_t)cnt.n);
        if (out->cols == NULL || out->vals == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(out->cols, cnt.cols, sizeof(int32_t) * (size_t)cnt.n);
        memcpy(out->vals, v, sizeof(double) * (size_t)cnt.n);
    }
    Py_INCREF(self);
    out->owner = self;
    out->probs = probs;
    PyMem_Free(heap);
    Py_DECREF(words);
    Py_DECREF(contacts);
    return (PyObject *)out;

fail:
    Py_XDECREF(probs);
    Py_XDECREF(out);
    PyMem_Free(heap);
    Py_DECREF(words);
    Py_DECREF(contacts);
    return NULL;
}

static PyMethodDef Scorer_methods[] = {
    {"score", (PyCFunction)Scorer_score, METH_VARARGS,
     "score(words, text, contacts) -> Scored: probabilities, columns and values of one normalized text"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Scorer_get_n_cols(Scorer *self, void *closure) { return PyLong_FromSsize_t(self->n_cols); }

static PyGetSetDef Scorer_getset[] = {
    {"n_cols", (getter)Scorer_get_n_cols, NULL, "columns (features) of the model", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScorerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "classifier._native.Scorer",
    .tp_basicsize = sizeof(Scorer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The numeric core of FastScorer for one model (see the module docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scorer_init,
    .tp_dealloc = (destructor)Scorer_dealloc,
    .tp_methods = Scorer_methods,
    .tp_getset = Scorer_getset,
};

/* --- Scored ----------------------------------------------------------------------------------- */

static void Scored_dealloc(Scored *self) {
    Py_XDECREF(self->probs);
    Py_XDECREF(self->owner);
    PyMem_Free(self->cols);
    PyMem_Free(self->vals);
    PyObject_Free(self);
}

typedef struct {
    double x;
    Py_ssize_t i;
} Ranked;

static PyObject *Scored_top(Scored *self, PyObject *args) {
    Py_ssize_t ci, k;
    if (!PyArg_ParseTuple(args, "nn:top", &ci, &k)) return NULL;
    Scorer *sc = self->owner;
    if (ci < 0 || ci >= sc->n_classes) {
        PyErr_SetString(PyExc_IndexError, "class index out of range");
        return NULL;
    }
    if (k < 0) k = 0;
    if (k > self->n) k = self->n;
    Ranked stack[16];
    Ranked *best = k <= 16 ? stack : PyMem_Malloc(sizeof(Ranked) * (size_t)k);
    if (best == NULL) return PyErr_NoMemory();
    /* One column for a binary model: it pushes toward classes[1], away from classes[0]. */
    Py_ssize_t wi = sc->n_out == 1 ? 0 : ci;
    double sign = sc->n_out == 1 && ci != 1 ? -1.0 : 1.0;
    Py_ssize_t got = 0;
    for (Py_ssize_t i = 0; i < self->n && k; i++) {
        double x = self->vals[i] * sc->rowp[(Py_ssize_t)self->cols[i] * sc->width + 1 + wi];
        if (sc->n_out == 1) x = x * sign;
        if (!(x > 0.0)) continue; /* the ranking stops at the first value that is not positive */
        /* after every equal value: ties keep their order of first appearance (a stable sort) */
        Py_ssize_t pos = got;
        while (pos > 0 && best[pos - 1].x < x) pos--;
        if (pos >= k) continue;
        Py_ssize_t last = got < k ? got : k - 1;
        memmove(best + pos + 1, best + pos, sizeof(Ranked) * (size_t)(last - pos));
        best[pos].x = x;
        best[pos].i = i;
        if (got < k) got++;
    }
    PyObject *out = PyList_New(got);
    if (out == NULL) goto done;
    for (Py_ssize_t j = 0; j < got; j++) {
        PyObject *item = Py_BuildValue("(id)", (int)self->cols[best[j].i], best[j].x);
        if (item == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, j, item);
    }
done:
    if (best != stack) PyMem_Free(best);
    return out;
}

static PyObject *Scored_get_probs(Scored *self, void *closure) {
    Py_INCREF(self->probs);
    return self->probs;
}

static PyObject *Scored_get_cols(Scored *self, void *closure) {
    PyObject *out = PyList_New(self->n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *c = PyLong_FromLong(self->cols[i]);
        if (c == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, c);
    }
    return out;
}

static PyObject *Scored_get_vals(Scored *self, void *closure) {
    PyObject *out = PyList_New(self->n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *f = PyFloat_FromDouble(self->vals[i]);
        if (f == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, f);
    }
    return out;
}

static PyMethodDef Scored_methods[] = {
    {"top", (PyCFunction)Scored_top, METH_VARARGS,
     "top(class_index, k) -> [(column, value x weight)]: the k largest positive contributions, ties in "
     "order of first appearance"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scored_getset[] = {
    {"probs", (getter)Scored_get_probs, NULL, "probabilities in class order", NULL},
    {"cols", (getter)Scored_get_cols, NULL, "columns found, unique, in order of first appearance", NULL},
    {"vals", (getter)Scored_get_vals, NULL, "TF-IDF values of those columns", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScoredType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "classifier._native.Scored",
    .tp_basicsize = sizeof(Scored),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One text scored by Scorer.score.",
    .tp_dealloc = (destructor)Scored_dealloc,
    .tp_methods = Scored_methods,
    .tp_getset = Scored_getset,
};

/* --- module ----------------------------------------------------------------------------------- */

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "classifier._native",
    .m_doc = "The per-message numeric core of classifier.model.FastScorer (see _native.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&ScorerType) < 0 || PyType_Ready(&ScoredType) < 0) return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) return NULL;
    Py_INCREF(&ScorerType);
    if (PyModule_AddObject(m, "Scorer", (PyObject *)&ScorerType) < 0) {
        Py_DECREF(&ScorerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ScoredType);
    if (PyModule_AddObject(m, "Scored", (PyObject *)&ScoredType) < 0) {
        Py_DECREF(&ScoredType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
