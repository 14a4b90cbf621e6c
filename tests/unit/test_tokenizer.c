/* test_tokenizer.c: tokenizer.json encode/decode held to goldens from sentencepiece and Hugging Face
 * tokenizers (tests/fixtures/gen_tokenizer.py writes them), plus the error paths. Run from the repo root. */
#include "../../formats/tokenizer.h"
#include "check.h"

#include <cJSON.h>
#include <string.h>

#define STORIES "models/stories260K/tokenizer.json"
#define FIX "tests/fixtures/tokenizer/"

static int shown; /* mismatches printed in full, so a broken build does not flood the log */

static char *slurp(const char *path, size_t *len) {
    char *buf = NULL;
    sq_err err = {0};
    CHECK_OK(sq_read_file(path, &buf, len, &err), &err);
    return buf;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t fnv_ids(uint64_t h, const int *ids, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        unsigned char b[4] = {(unsigned char)ids[i], (unsigned char)(ids[i] >> 8), (unsigned char)(ids[i] >> 16),
                              (unsigned char)((unsigned)ids[i] >> 24)};
        h = fnv1a(h, b, 4);
    }
    return h;
}

static bool same_ids(const int *ids, int64_t n, const cJSON *want) {
    if (!cJSON_IsArray(want) || cJSON_GetArraySize(want) != n) return false;
    int64_t i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, want) if (ids[i++] != x->valueint) return false;
    return true;
}

static void show_ids(const char *label, const int *ids, int64_t n) {
    fprintf(stderr, "  %s:", label);
    for (int64_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static void set_key(cJSON *obj, const cJSON *x) {
    cJSON *dup = cJSON_Duplicate(x, true);
    if (!cJSON_ReplaceItemInObjectCaseSensitive(obj, x->string, dup)) cJSON_AddItemToObject(obj, x->string, dup);
}

/* A variant: its base tokenizer.json with top-level keys and model keys replaced. */
static sq_tok *load_variant(const cJSON *v) {
    const char *name = cJSON_GetObjectItem(v, "name")->valuestring;
    size_t len;
    char *base = slurp(cJSON_GetObjectItem(v, "base")->valuestring, &len);
    if (!base) return NULL;
    cJSON *root = cJSON_ParseWithLength(base, len);
    free(base);
    CHECK(root != NULL, "%s: base does not parse", name);
    if (!root) return NULL;
    const cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(v, "override")) set_key(root, x);
    cJSON *model = cJSON_GetObjectItem(root, "model");
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(v, "model")) set_key(model, x);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    sq_tok *t = NULL;
    sq_err err = {0};
    CHECK_OK(sq_tok_parse(&t, json, strlen(json), name, &err), &err);
    free(json);
    if (t) {
        CHECK(sq_tok_bos(t) == cJSON_GetObjectItem(v, "bos")->valueint, "%s: bos %d", name, sq_tok_bos(t));
        CHECK(sq_tok_vocab_size(t) == cJSON_GetObjectItem(v, "vocab_size")->valueint, "%s: vocab size %d", name,
              sq_tok_vocab_size(t));
    }
    return t;
}

static int unhex(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

static void check_decode(const sq_tok *t, const char *variant, const char *what, const int *ids, int64_t n, bool skip,
                         const cJSON *want) {
    if (cJSON_IsNull(want)) { /* HF panics here: only ask for no crash */
        char *s = NULL;
        size_t len;
        sq_tok_decode(t, ids, n, skip, &s, &len, NULL);
        free(s);
        return;
    }
    char *s = NULL;
    size_t len = 0;
    sq_err err = {0};
    CHECK_OK(sq_tok_decode(t, ids, n, skip, &s, &len, &err), &err);
    bool ok = s && cJSON_IsString(want) && strlen(want->valuestring) == len && memcmp(s, want->valuestring, len) == 0;
    CHECK(ok, "%s: decode%s of %s", variant, skip ? " (skip special)" : "", what);
    if (!ok && shown++ < 10) fprintf(stderr, "  got  \"%s\"\n  want \"%s\"\n", s ? s : "(null)", want->valuestring);
    free(s);
}

/* Every case of cases.json: ids with special tokens parsed or not, and decode with or without them. */
static void test_cases(void) {
    size_t len;
    char *text = slurp(FIX "cases.json", &len);
    if (!text) return;
    cJSON *doc = cJSON_ParseWithLength(text, len);
    free(text);
    CHECK(doc != NULL, "cases.json does not parse");
    if (!doc) return;
    const cJSON *vs = cJSON_GetObjectItem(doc, "variants"), *v, *c;
    int nv = cJSON_GetArraySize(vs), k = 0;
    sq_tok **toks = calloc((size_t)nv, sizeof *toks);
    const char **names = calloc((size_t)nv, sizeof *names);
    cJSON_ArrayForEach(v, vs) {
        names[k] = cJSON_GetObjectItem(v, "name")->valuestring;
        toks[k++] = load_variant(v);
    }
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases")) {
        const char *variant = cJSON_GetObjectItem(c, "variant")->valuestring;
        const sq_tok *t = NULL;
        for (k = 0; k < nv; k++)
            if (!strcmp(names[k], variant)) t = toks[k];
        if (!t) continue;
        n_cases++;
        const cJSON *want = cJSON_GetObjectItem(c, "decode"), *skip = cJSON_GetObjectItem(c, "decode_skip");
        const cJSON *dids = cJSON_GetObjectItem(c, "decode_ids");
        if (dids) {
            int n = cJSON_GetArraySize(dids), i = 0, *ids = malloc(sizeof(int) * (size_t)(n ? n : 1));
            cJSON_ArrayForEach(v, dids) ids[i++] = v->valueint;
            check_decode(t, variant, "raw ids", ids, n, false, want);
            check_decode(t, variant, "raw ids", ids, n, true, skip);
            free(ids);
            continue;
        }
        /* the text: UTF-8, or bytes given in hex */
        const cJSON *hex = cJSON_GetObjectItem(c, "hex");
        char *s;
        size_t n;
        if (hex) {
            n = strlen(hex->valuestring) / 2;
            s = malloc(n + 1);
            for (size_t i = 0; i < n; i++) s[i] = (char)(unhex(hex->valuestring[2 * i]) * 16 + unhex(hex->valuestring[2 * i + 1]));
        } else {
            n = strlen(cJSON_GetObjectItem(c, "text")->valuestring);
            s = malloc(n + 1);
            memcpy(s, cJSON_GetObjectItem(c, "text")->valuestring, n);
        }
        s[n] = 0;
        const char *what = hex ? hex->valuestring : s;
        int *ids = NULL, *ids_sp = NULL;
        int64_t n_ids = 0, n_sp = 0;
        sq_err err = {0};
        if (cJSON_GetObjectItem(c, "error")) {
            sq_status st = sq_tok_encode(t, s, n, false, &ids, &n_ids, &err);
            CHECK(st == SQ_ERR_UNSUPPORTED && strstr(err.msg, variant) && ids == NULL, "%s: \"%s\" should be refused: %s",
                  variant, what, err.msg);
            free(s);
            continue;
        }
        CHECK_OK(sq_tok_encode(t, s, n, false, &ids, &n_ids, &err), &err);
        CHECK_OK(sq_tok_encode(t, s, n, true, &ids_sp, &n_sp, &err), &err);
        const cJSON *want_ids = cJSON_GetObjectItem(c, "ids"), *want_sp = cJSON_GetObjectItem(c, "ids_special");
        bool ok = ids && same_ids(ids, n_ids, want_ids);
        CHECK(ok, "%s: ids of \"%s\"", variant, what);
        if (!ok && shown++ < 10) show_ids("got", ids, n_ids);
        ok = ids_sp && same_ids(ids_sp, n_sp, want_sp ? want_sp : want_ids);
        CHECK(ok, "%s: ids of \"%s\" with special tokens parsed", variant, what);
        if (!ok && shown++ < 10) show_ids("got", ids_sp, n_sp);
        if (ids_sp) {
            check_decode(t, variant, what, ids_sp, n_sp, false, want);
            check_decode(t, variant, what, ids_sp, n_sp, true, skip ? skip : want);
        }
        free(ids);
        free(ids_sp);
        free(s);
    }
    CHECK(n_cases > 500, "only %d cases ran", n_cases);
    for (k = 0; k < nv; k++) sq_tok_free(toks[k]);
    free(toks);
    free(names);
    cJSON_Delete(doc);
}

/* lines.golden: whole files as one stream and line by line, as count + FNV-1a hash. */
static void test_lines(void) {
    size_t len;
    char *g = slurp(FIX "lines.golden", &len);
    if (!g) return;
    sq_tok *t = NULL;
    char *file = NULL, tokpath[256] = "", path[256] = "";
    size_t file_len = 0;
    int *stream = NULL;
    int64_t n_stream = 0;
    int n_chunks = 0, n_streams = 0;
    for (char *line = g, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        sq_err err = {0};
        if (!strncmp(line, "tokenizer ", 10)) {
            sq_tok_free(t);
            t = NULL;
            snprintf(tokpath, sizeof tokpath, "%s", line + 10);
            CHECK_OK(sq_tok_load(&t, tokpath, &err), &err);
        } else if (!strncmp(line, "file ", 5)) {
            int n_lines, chunk;
            CHECK(sscanf(line + 5, "%255s %d %d", path, &n_lines, &chunk) == 3, "bad line: %s", line);
            free(file);
            file = slurp(path, &file_len);
        } else if (!strncmp(line, "stream ", 7) && t && file) {
            long long count;
            unsigned long long hash;
            CHECK(sscanf(line + 7, "%lld %llx", &count, &hash) == 2, "bad line: %s", line);
            free(stream);
            stream = NULL;
            int *ids = NULL;
            int64_t n = 0;
            CHECK_OK(sq_tok_encode(t, file, file_len, false, &ids, &n, &err), &err);
            int bos = sq_tok_bos(t);
            n_stream = n + (bos >= 0);
            stream = malloc(sizeof(int) * (size_t)(n_stream + 1));
            if (bos >= 0) stream[0] = bos;
            if (ids) memcpy(stream + (bos >= 0), ids, sizeof(int) * (size_t)n);
            free(ids);
            uint64_t h = fnv_ids(0xcbf29ce484222325ull, stream, n_stream);
            CHECK(n_stream == count && h == hash, "%s on %s as one stream: %lld ids (want %lld), hash %016llx (want %016llx)",
                  tokpath, path, (long long)n_stream, count, (unsigned long long)h, hash);
            n_streams++;
        } else if (!strncmp(line, "chunk ", 6) && t && file) {
            long long first, nl, count;
            unsigned long long hash, dhash;
            CHECK(sscanf(line + 6, "%lld %lld %lld %llx %llx", &first, &nl, &count, &hash, &dhash) == 5, "bad: %s", line);
            /* find line `first` */
            const char *p = file, *end = file + file_len;
            for (long long i = 0; i < first && p; i++) {
                p = memchr(p, '\n', (size_t)(end - p));
                if (p) p++;
            }
            uint64_t h = 0xcbf29ce484222325ull, dh = h;
            long long total = 0;
            for (long long i = 0; i < nl && p; i++) {
                const char *e = memchr(p, '\n', (size_t)(end - p));
                if (!e) e = end;
                int *ids = NULL;
                int64_t n = 0;
                char *txt = NULL;
                size_t tl = 0;
                CHECK_OK(sq_tok_encode(t, p, (size_t)(e - p), false, &ids, &n, &err), &err);
                CHECK_OK(sq_tok_decode(t, ids, n, false, &txt, &tl, &err), &err);
                total += n;
                h = fnv_ids(h, ids, n);
                h = fnv1a(h, "\xff\xff\xff\xff", 4);
                if (txt) dh = fnv1a(dh, txt, tl);
                dh = fnv1a(dh, "\xff", 1);
                free(ids);
                free(txt);
                p = e < end ? e + 1 : NULL;
            }
            CHECK(total == count && h == hash, "%s on %s lines %lld..%lld: %lld ids (want %lld) or hash differs", tokpath,
                  path, first, first + nl - 1, total, count);
            CHECK(dh == dhash, "%s on %s lines %lld..%lld: decode(encode(line)) differs from HF", tokpath, path, first,
                  first + nl - 1);
            n_chunks++;
        } else if (!strncmp(line, "ids ", 4) && stream) {
            int64_t i = 0;
            bool ok = true;
            for (char *q = line + 4, *qe; *q; q = qe) {
                long v = strtol(q, &qe, 10);
                if (qe == q) break;
                ok = ok && i < n_stream && stream[i] == v;
                i++;
            }
            CHECK(ok && i == n_stream, "%s: full id list differs", path);
        }
    }
    CHECK(n_streams == 5 && n_chunks > 200, "lines.golden: %d streams, %d chunks", n_streams, n_chunks);
    sq_tok_free(t);
    free(stream);
    free(file);
    free(g);
}

/* tests/golden/stories260K.json: sentencepiece's ids of eval.txt, the prompt, and the greedy text. */
static void test_stories_golden(void) {
    size_t len;
    char *text = slurp("tests/golden/stories260K.json", &len);
    cJSON *g = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    sq_tok *t = NULL;
    sq_err err = {0};
    CHECK_OK(sq_tok_load(&t, STORIES, &err), &err);
    if (!g || !t) {
        cJSON_Delete(g);
        sq_tok_free(t);
        return;
    }
    char *eval = slurp(cJSON_GetObjectItem(g, "eval_text")->valuestring, &len);
    int *ids = NULL;
    int64_t n = 0;
    CHECK_OK(sq_tok_encode(t, eval, len, false, &ids, &n, &err), &err);
    const cJSON *want = cJSON_GetObjectItem(g, "eval_ids_with_bos"), *x;
    bool ok = ids && cJSON_GetArraySize(want) == n + 1 && sq_tok_bos(t) == cJSON_GetArrayItem(want, 0)->valueint;
    int64_t i = -1;
    cJSON_ArrayForEach(x, want) {
        if (i >= 0 && ok) ok = ids[i] == x->valueint;
        i++;
    }
    CHECK(ok, "eval.txt ids differ from tests/golden/stories260K.json (%lld ids)", (long long)n);
    free(ids);
    free(eval);

    const char *prompt = cJSON_GetObjectItem(g, "prompt")->valuestring;
    CHECK_OK(sq_tok_encode(t, prompt, strlen(prompt), false, &ids, &n, &err), &err);
    want = cJSON_GetObjectItem(g, "prompt_ids");
    ok = ids && cJSON_GetArraySize(want) == n + 1;
    for (i = 0; ok && i < n; i++) ok = ids[i] == cJSON_GetArrayItem(want, (int)i + 1)->valueint;
    CHECK(ok, "prompt ids differ");
    free(ids);

    const cJSON *greedy = cJSON_GetObjectItem(g, "greedy");
    const cJSON *p = cJSON_GetObjectItem(greedy, "prompt_ids"), *q = cJSON_GetObjectItem(greedy, "new_ids");
    int np = cJSON_GetArraySize(p), nq = cJSON_GetArraySize(q), k = 0;
    int *all = malloc(sizeof(int) * (size_t)(np + nq));
    cJSON_ArrayForEach(x, p) all[k++] = x->valueint;
    cJSON_ArrayForEach(x, q) all[k++] = x->valueint;
    char *s = NULL;
    size_t sl = 0;
    CHECK_OK(sq_tok_decode(t, all, k, true, &s, &sl, &err), &err);
    const char *gt = cJSON_GetObjectItem(greedy, "text")->valuestring;
    CHECK(s && sl == strlen(gt) && !memcmp(s, gt, sl), "greedy text decodes to \"%s\"", s ? s : "");
    free(s);
    free(all);
    sq_tok_free(t);
    cJSON_Delete(g);
}

static void test_api(void) {
    sq_tok *t = NULL;
    sq_err err = {0};
    CHECK_OK(sq_tok_load(&t, STORIES, &err), &err);
    if (!t) return;
    CHECK(sq_tok_vocab_size(t) == 512, "vocab %d", sq_tok_vocab_size(t));
    CHECK(sq_tok_bos(t) == 1, "bos %d", sq_tok_bos(t));
    CHECK(sq_tok_id(t, "<s>") == 1 && sq_tok_id(t, "<0x0A>") == 13 && sq_tok_id(t, "\xe2\x96\x81t") >= 259, "ids");
    CHECK(sq_tok_id(t, "no such piece") == -1 && sq_tok_id(t, NULL) == -1, "absent piece");
    CHECK(sq_tok_piece(t, 0) && !strcmp(sq_tok_piece(t, 0), "<unk>"), "piece 0");
    CHECK(sq_tok_piece(t, 512) == NULL && sq_tok_piece(t, -1) == NULL, "piece out of range");
    int bad[] = {5, 512};
    char *s = (char *)1;
    size_t n = 7;
    CHECK(sq_tok_decode(t, bad, 2, false, &s, &n, &err) == SQ_ERR_ARG && s == NULL && n == 0 && strstr(err.msg, STORIES) &&
              strstr(err.msg, "512"),
          "out-of-range id: %s", err.msg);
    bad[1] = -3;
    CHECK(sq_tok_decode(t, bad, 2, false, &s, &n, &err) == SQ_ERR_ARG, "negative id");
    CHECK_OK(sq_tok_decode(t, NULL, 0, false, &s, &n, &err), &err);
    CHECK(s && n == 0 && *s == 0, "empty decode");
    free(s);
    int *ids = (int *)1;
    int64_t m = 5;
    CHECK_OK(sq_tok_encode(t, NULL, 0, false, &ids, &m, &err), &err);
    CHECK(ids != NULL && m == 0, "empty encode");
    free(ids);
    CHECK(sq_tok_encode(t, NULL, 3, false, &ids, &m, &err) == SQ_ERR_ARG, "NULL text");
    CHECK(sq_tok_encode(NULL, "a", 1, false, &ids, &m, &err) == SQ_ERR_ARG, "NULL tokenizer");
    /* an embedded NUL is text like any other (byte fallback <0x00>) */
    CHECK_OK(sq_tok_encode(t, "a\0b", 3, false, &ids, &m, &err), &err);
    CHECK(m >= 3 && ids[1] == 3, "NUL byte");
    free(ids);
    CHECK(sq_tok_vocab_size(NULL) == 0 && sq_tok_bos(NULL) == -1 && sq_tok_piece(NULL, 0) == NULL, "NULL tokenizer");
    sq_tok_free(t);
    sq_tok_free(NULL);
    CHECK(sq_tok_load(&t, "tests/fixtures/tokenizer/no-such.json", &err) == SQ_ERR_IO && t == NULL, "missing file");
}

/* Broken files: each refused with the named status and a one-line message naming the file and the problem. */
static void test_errors(void) {
    static const struct {
        const char *json;
        sq_status code;
        const char *says;
    } cases[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}", SQ_ERR_FORMAT, "malformed JSON"},
        {"[1, 2]", SQ_ERR_FORMAT, "not a JSON object"},
        {"{}", SQ_ERR_FORMAT, "\"model\""},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", SQ_ERR_UNSUPPORTED, "Unigram"},
        {"{\"model\": {\"type\": \"BPE\"}}", SQ_ERR_FORMAT, "vocab"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}", SQ_ERR_FORMAT, "empty vocabulary"},
        {"{\"model\": {\"vocab\": {\"a\": -1}}}", SQ_ERR_FORMAT, "out of range"},
        {"{\"model\": {\"vocab\": {\"a\": 1.5}}}", SQ_ERR_FORMAT, "out of range"},
        {"{\"model\": {\"vocab\": {\"a\": 99999999}}}", SQ_ERR_FORMAT, "out of range"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": -1, \"content\": \"x\"}]}", SQ_ERR_FORMAT,
         "out of range"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1}]}", SQ_ERR_FORMAT, "content"},
        {"{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", SQ_ERR_FORMAT, "\"ab\" is not in the vocabulary"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a c\"]}}", SQ_ERR_FORMAT, "\"c\" is not in the vocabulary"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}", SQ_ERR_FORMAT, "merge 0"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", SQ_ERR_FORMAT, "merge 0"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"dropout\": 0.1}}", SQ_ERR_UNSUPPORTED, "dropout"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"Precompiled\"}}", SQ_ERR_UNSUPPORTED,
         "normalizer type \"Precompiled\""},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"normalizer\": {\"kind\": \"NFC\"}}", SQ_ERR_FORMAT, "missing \"type\""},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
         "[{\"type\": \"BertPreTokenizer\"}]}}",
         SQ_ERR_UNSUPPORTED, "pre_tokenizer type \"BertPreTokenizer\""},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"decoder\": {\"type\": \"WordPiece\"}}", SQ_ERR_UNSUPPORTED, "WordPiece"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"Mystery\"}}", SQ_ERR_UNSUPPORTED, "Mystery"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"(a\"}, "
         "\"content\": \"\"}}",
         SQ_ERR_FORMAT, "bad regex"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{Bogus}\"}, "
         "\"behavior\": \"Isolated\"}}",
         SQ_ERR_FORMAT, "bad regex"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
         "\"behavior\": \"Sideways\"}}",
         SQ_ERR_FORMAT, "Sideways"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Glob\": \"a\"}, "
         "\"behavior\": \"Isolated\"}}",
         SQ_ERR_FORMAT, "pattern"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"ab\"}}",
         SQ_ERR_FORMAT, "one character"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"decoder\": {\"type\": \"Strip\", \"content\": \" \", \"start\": -1, "
         "\"stop\": 0}}",
         SQ_ERR_FORMAT, "Strip"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
         "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}], \"special_tokens\": {}}}",
         SQ_ERR_FORMAT, "\"<s>\""},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
         "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"ids\": [5]}}}}",
         SQ_ERR_FORMAT, "id 5 is out of range"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"fuse_unk\": \"yes\"}}", SQ_ERR_FORMAT, "fuse_unk"},
        {"{\"model\": {\"vocab\": {\"a\\udc00\": 0}}}", SQ_ERR_FORMAT, "JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sq_tok *t = (sq_tok *)1;
        sq_err err = {0};
        sq_status st = sq_tok_parse(&t, cases[i].json, strlen(cases[i].json), "bad.json", &err);
        CHECK(st == cases[i].code && t == NULL && !strncmp(err.msg, "bad.json: ", 10) && strstr(err.msg, cases[i].says) &&
                  !strchr(err.msg, '\n'),
              "case %zu: %s -> %d \"%s\"", i, cases[i].json, st, err.msg);
        if (st == SQ_OK) sq_tok_free(t);
    }
    /* a catastrophic regex must stop with a message, not hang */
    const char *slow = "{\"model\": {\"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": "
                       "{\"Regex\": \"(a*)*b\"}, \"content\": \"\"}}";
    sq_tok *t = NULL;
    sq_err err = {0};
    CHECK_OK(sq_tok_parse(&t, slow, strlen(slow), "slow.json", &err), &err);
    if (t) {
        char text[4096];
        memset(text, 'a', sizeof text);
        int *ids = NULL;
        int64_t n = 0;
        sq_status st = sq_tok_encode(t, text, sizeof text, false, &ids, &n, &err);
        CHECK(st == SQ_OK || (st == SQ_ERR_FORMAT && strstr(err.msg, "slow.json")), "catastrophic regex: %s", err.msg);
        free(ids);
        sq_tok_free(t);
    }
}

int main(void) {
    test_api();
    test_errors();
    test_cases();
    test_stories_golden();
    test_lines();
    return check_report("test_tokenizer");
}
