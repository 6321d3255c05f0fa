/*
 * lors_bad_input: what liblors does with bad input, case by case
 * (docs/liblors.md, "Errors and bad input"). Run by tests/liblors_c.rs
 * against a real grid:
 *
 *   lors_bad_input DIR OTHERS_FILE PROXY EXPIRED_PROXY FRESH_PROXY
 *
 * DIR: a directory to make and use; OTHERS_FILE: a file of another user
 * that this one may not read; PROXY: this user's proxy file (replaced
 * during the run by renaming EXPIRED_PROXY, then FRESH_PROXY, over it).
 *
 * Prints "ok CASE: CODE (n): message" or "FAIL CASE: ..." per case, where
 * a case passes when the call returned the expected code and
 * lors_last_error() is empty after a success and not empty after a
 * failure. Exits 0 when every case passed.
 */

#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lors.h>

static int failures, cases;

static void expect(const char *name, int rc, int want)
{
    const char *msg = lors_last_error();
    int ok = rc == want && (want == LORS_OK ? msg[0] == '\0' : msg[0] != '\0');
    cases++;
    printf("%s %s: %s (%d)%s%s\n", ok ? "ok" : "FAIL", name, lors_error_name(rc), rc,
           msg[0] ? ": " : "", msg);
    if (!ok) {
        failures++;
        printf("     expected %s (%d) with %s message\n", lors_error_name(want), want,
               want == LORS_OK ? "an empty" : "a");
    }
}

static void check(const char *name, int cond)
{
    cases++;
    printf("%s %s\n", cond ? "ok" : "FAIL", name);
    if (!cond)
        failures++;
}

#define EXPECT(name, call, want) expect(name, (call), (want))

#define FILE_SIZE (1 << 20)
static unsigned char data[FILE_SIZE];

/* ---- concurrent use of one reader ---- */

struct shared {
    lors_reader *r;
    atomic_uint reads;
    atomic_uint bad;
    atomic_ullong streamed;
    int last_rc[8];
};

struct job {
    struct shared *s;
    int index;
};

/* read_at at pseudo-random offsets, checking every byte. */
static void *random_reads(void *arg)
{
    struct job *j = arg;
    unsigned x = 12345u + (unsigned)j->index * 7919u;
    unsigned char buf[5000];
    for (int i = 0; i < 40; i++) {
        x = x * 1103515245u + 12345u;
        uint64_t off = x % FILE_SIZE;
        size_t got;
        int rc = lors_read_at(j->s->r, off, buf, sizeof buf, &got);
        size_t want = FILE_SIZE - off < sizeof buf ? FILE_SIZE - off : sizeof buf;
        if (rc != LORS_OK || got != want || memcmp(buf, data + off, got) != 0)
            atomic_fetch_add(&j->s->bad, 1);
        atomic_fetch_add(&j->s->reads, 1);
    }
    return NULL;
}

/* lors_read until the end: the threads share one position. */
static void *stream_reads(void *arg)
{
    struct job *j = arg;
    unsigned char buf[4096];
    for (;;) {
        size_t got;
        int rc = lors_read(j->s->r, buf, sizeof buf, &got);
        if (rc != LORS_OK) {
            atomic_fetch_add(&j->s->bad, 1);
            break;
        }
        if (got == 0)
            break;
        atomic_fetch_add(&j->s->streamed, got);
    }
    return NULL;
}

/* read_at until the handle is closed under it. */
static void *reads_until_closed(void *arg)
{
    struct job *j = arg;
    unsigned char buf[1000];
    for (;;) {
        size_t got;
        int rc = lors_read_at(j->s->r, 4096, buf, sizeof buf, &got);
        atomic_fetch_add(&j->s->reads, 1);
        if (rc != LORS_OK) {
            j->s->last_rc[j->index] = rc;
            return NULL;
        }
        if (got != sizeof buf || memcmp(buf, data + 4096, got) != 0)
            atomic_fetch_add(&j->s->bad, 1);
    }
}

static void run_threads(struct shared *s, int n, void *(*f)(void *))
{
    pthread_t t[8];
    struct job jobs[8];
    for (int i = 0; i < n; i++) {
        jobs[i].s = s;
        jobs[i].index = i;
        if (pthread_create(&t[i], NULL, f, &jobs[i]) != 0) {
            perror("pthread_create");
            exit(2);
        }
    }
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

/* ---- a progress callback that calls back into the library ---- */

struct nested {
    lors_client *c;
    int rc;
    int calls;
};

static void nested_call(uint64_t done, uint64_t total, void *p)
{
    struct nested *n = p;
    lors_entry e;
    (void)done;
    (void)total;
    n->calls++;
    n->rc = lors_stat(n->c, "/vo1", &e);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s DIR OTHERS_FILE PROXY EXPIRED_PROXY FRESH_PROXY\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *others = argv[2], *proxy = argv[3];
    const char *expired = argv[4], *fresh = argv[5];
    char file[1024], empty[1024], missing[1024], local_missing[1024], written[1024];
    snprintf(file, sizeof file, "%s/data.bin", dir);
    snprintf(empty, sizeof empty, "%s/empty.bin", dir);
    snprintf(missing, sizeof missing, "%s/no-such-file", dir);
    snprintf(written, sizeof written, "%s/written.bin", dir);
    snprintf(local_missing, sizeof local_missing, "%s.local", expired);
    for (size_t i = 0; i < FILE_SIZE; i++)
        data[i] = (unsigned char)(i * 31 + (i >> 8));

    lors_client *c = NULL;
    EXPECT("client_new with out NULL", lors_client_new(NULL, NULL), LORS_ERR_USAGE);
    lors_options missing_config = {0};
    missing_config.config_file = "/nonexistent/lors/config.toml";
    EXPECT("client_new with a missing configuration file", lors_client_new(&missing_config, &c),
           LORS_ERR_LOCAL);
    check("  leaves no client", c == NULL);
    EXPECT("client_from_env", lors_client_from_env(&c), LORS_OK);
    if (!c)
        return 2;
    EXPECT("mkdir -p", lors_mkdir(c, dir, 1), LORS_OK);
    EXPECT("mkdir of an existing directory", lors_mkdir(c, dir, 0), LORS_ERR_CONFLICT);
    /* Blocks of 64 KiB: each read fetches (at least) the block it falls in. */
    uint64_t version = 0;
    lors_upload_options small = {0};
    small.block_size = 64 << 10;
    EXPECT("upload_buffer", lors_upload_buffer(c, data, FILE_SIZE, file, &small, NULL, NULL, &version),
           LORS_OK);

    /* NULL for every handle, buffer and out-parameter. */
    lors_entry e;
    lors_entry *list;
    size_t n, got;
    uint64_t size;
    unsigned char buf[256];
    lors_reader *r = NULL;
    lors_writer *w = NULL;
    EXPECT("stat with client NULL", lors_stat(NULL, file, &e), LORS_ERR_USAGE);
    EXPECT("stat with path NULL", lors_stat(c, NULL, &e), LORS_ERR_USAGE);
    EXPECT("stat with out NULL", lors_stat(c, file, NULL), LORS_ERR_USAGE);
    EXPECT("stat of a path that is not UTF-8", lors_stat(c, "/vo1/\xff\xfe", &e), LORS_ERR_USAGE);
    EXPECT("list with client NULL", lors_list(NULL, dir, &list, &n), LORS_ERR_USAGE);
    EXPECT("list with list NULL", lors_list(c, dir, NULL, &n), LORS_ERR_USAGE);
    EXPECT("list with count NULL", lors_list(c, dir, &list, NULL), LORS_ERR_USAGE);
    EXPECT("mkdir with client NULL", lors_mkdir(NULL, dir, 1), LORS_ERR_USAGE);
    EXPECT("mkdir with path NULL", lors_mkdir(c, NULL, 1), LORS_ERR_USAGE);
    EXPECT("mv with from NULL", lors_mv(c, NULL, file), LORS_ERR_USAGE);
    EXPECT("mv with to NULL", lors_mv(c, file, NULL), LORS_ERR_USAGE);
    EXPECT("rm with client NULL", lors_rm(NULL, file), LORS_ERR_USAGE);
    EXPECT("rm with path NULL", lors_rm(c, NULL), LORS_ERR_USAGE);
    EXPECT("refresh with client NULL", lors_refresh(NULL, file, 0), LORS_ERR_USAGE);
    EXPECT("refresh with path NULL", lors_refresh(c, NULL, 0), LORS_ERR_USAGE);
    EXPECT("usage with out NULL", lors_usage(c, NULL), LORS_ERR_USAGE);
    lors_usage_info u;
    EXPECT("usage with client NULL", lors_usage(NULL, &u), LORS_ERR_USAGE);
    EXPECT("upload_file with local NULL",
           lors_upload_file(c, NULL, file, NULL, NULL, NULL, NULL), LORS_ERR_USAGE);
    EXPECT("upload_file with path NULL",
           lors_upload_file(c, argv[0], NULL, NULL, NULL, NULL, NULL), LORS_ERR_USAGE);
    EXPECT("upload_buffer with data NULL and length 10",
           lors_upload_buffer(c, NULL, 10, file, NULL, NULL, NULL, NULL), LORS_ERR_USAGE);
    EXPECT("download_file with local NULL", lors_download_file(c, file, NULL, NULL, NULL),
           LORS_ERR_USAGE);
    EXPECT("download_buffer with buf NULL and capacity 10",
           lors_download_buffer(c, file, NULL, 10, &size, NULL, NULL), LORS_ERR_USAGE);
    EXPECT("download_buffer with size NULL",
           lors_download_buffer(c, file, buf, sizeof buf, NULL, NULL, NULL), LORS_ERR_USAGE);
    EXPECT("open with client NULL", lors_open(NULL, file, NULL, &r), LORS_ERR_USAGE);
    EXPECT("open with path NULL", lors_open(c, NULL, NULL, &r), LORS_ERR_USAGE);
    EXPECT("open with out NULL", lors_open(c, file, NULL, NULL), LORS_ERR_USAGE);
    EXPECT("read_at with reader NULL", lors_read_at(NULL, 0, buf, sizeof buf, &got),
           LORS_ERR_USAGE);
    EXPECT("read with reader NULL", lors_read(NULL, buf, sizeof buf, &got), LORS_ERR_USAGE);
    EXPECT("size with reader NULL", lors_size(NULL, &size), LORS_ERR_USAGE);
    EXPECT("seek with reader NULL", lors_seek(NULL, 0, LORS_SEEK_SET, NULL), LORS_ERR_USAGE);
    EXPECT("create with client NULL", lors_create(NULL, written, NULL, &w), LORS_ERR_USAGE);
    EXPECT("create with out NULL", lors_create(c, written, NULL, NULL), LORS_ERR_USAGE);
    EXPECT("write with writer NULL", lors_write(NULL, buf, 1), LORS_ERR_USAGE);
    EXPECT("commit with writer NULL", lors_commit(NULL, NULL), LORS_ERR_USAGE);
    EXPECT("client_free(NULL) is a no-op", lors_client_free(NULL), LORS_OK);
    EXPECT("close(NULL) is a no-op", lors_close(NULL), LORS_OK);
    EXPECT("abort(NULL) is a no-op", lors_abort(NULL), LORS_OK);
    lors_entry_clear(NULL);
    lors_list_free(NULL, 0);

    /* A reader: NULL buffers, zero lengths, offsets past the end. */
    EXPECT("open", lors_open(c, file, NULL, &r), LORS_OK);
    EXPECT("size", lors_size(r, &size), LORS_OK);
    check("size is the uploaded size", size == FILE_SIZE);
    EXPECT("size with out NULL", lors_size(r, NULL), LORS_ERR_USAGE);
    EXPECT("read_at with buf NULL and length 10", lors_read_at(r, 0, NULL, 10, &got),
           LORS_ERR_USAGE);
    EXPECT("read_at with nread NULL", lors_read_at(r, 0, buf, sizeof buf, NULL), LORS_ERR_USAGE);
    got = 99;
    EXPECT("read_at of length 0 into NULL", lors_read_at(r, 0, NULL, 0, &got), LORS_OK);
    check("  reads 0 bytes", got == 0);
    got = 99;
    EXPECT("read of length 0", lors_read(r, NULL, 0, &got), LORS_OK);
    check("  reads 0 bytes", got == 0);
    EXPECT("read_at at the end", lors_read_at(r, FILE_SIZE, buf, sizeof buf, &got), LORS_OK);
    check("  reads 0 bytes", got == 0);
    EXPECT("read_at past the end", lors_read_at(r, FILE_SIZE + 12345, buf, sizeof buf, &got),
           LORS_OK);
    check("  reads 0 bytes", got == 0);
    EXPECT("read_at at UINT64_MAX", lors_read_at(r, UINT64_MAX, buf, sizeof buf, &got), LORS_OK);
    check("  reads 0 bytes", got == 0);
    EXPECT("read_at across the end", lors_read_at(r, FILE_SIZE - 10, buf, sizeof buf, &got),
           LORS_OK);
    check("  reads the last 10 bytes", got == 10 && memcmp(buf, data + FILE_SIZE - 10, 10) == 0);
    uint64_t pos;
    EXPECT("seek before the start", lors_seek(r, -1, LORS_SEEK_SET, &pos), LORS_ERR_USAGE);
    EXPECT("seek with a bad whence", lors_seek(r, 0, 7, &pos), LORS_ERR_USAGE);
    EXPECT("seek past the end", lors_seek(r, 100, LORS_SEEK_END, &pos), LORS_OK);
    check("  position is size + 100", pos == FILE_SIZE + 100);
    EXPECT("read past the end", lors_read(r, buf, sizeof buf, &got), LORS_OK);
    check("  reads 0 bytes", got == 0);
    EXPECT("seek back from the end", lors_seek(r, -256, LORS_SEEK_END, &pos), LORS_OK);
    EXPECT("read the last 256 bytes", lors_read(r, buf, sizeof buf, &got), LORS_OK);
    check("  they match", got == 256 && memcmp(buf, data + FILE_SIZE - 256, 256) == 0);

    /* Concurrent use of one reader. */
    struct shared s;
    memset(&s, 0, sizeof s);
    s.r = r;
    run_threads(&s, 4, random_reads);
    check("4 threads x 40 read_at on one reader: every byte right",
          atomic_load(&s.reads) == 160 && atomic_load(&s.bad) == 0);
    EXPECT("seek to the start", lors_seek(r, 0, LORS_SEEK_SET, NULL), LORS_OK);
    run_threads(&s, 3, stream_reads);
    check("3 threads lors_read one reader: each byte read once",
          atomic_load(&s.streamed) == FILE_SIZE && atomic_load(&s.bad) == 0);

    /* Closing a reader while other threads read it. */
    memset(&s, 0, sizeof s);
    EXPECT("open again", lors_open(c, file, NULL, &s.r), LORS_OK);
    pthread_t t[3];
    struct job jobs[3];
    for (int i = 0; i < 3; i++) {
        jobs[i].s = &s;
        jobs[i].index = i;
        if (pthread_create(&t[i], NULL, reads_until_closed, &jobs[i]) != 0)
            return 2;
    }
    while (atomic_load(&s.reads) < 30)
        sched_yield();
    EXPECT("close while 3 threads read", lors_close(s.r), LORS_OK);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    check("  their next read is refused as LORS_ERR_USAGE",
          s.last_rc[0] == LORS_ERR_USAGE && s.last_rc[1] == LORS_ERR_USAGE &&
              s.last_rc[2] == LORS_ERR_USAGE && atomic_load(&s.bad) == 0);

    /* Closed, freed and invented handles. */
    EXPECT("close", lors_close(r), LORS_OK);
    EXPECT("close again", lors_close(r), LORS_ERR_USAGE);
    EXPECT("read_at on a closed reader", lors_read_at(r, 0, buf, sizeof buf, &got),
           LORS_ERR_USAGE);
    EXPECT("size of a closed reader", lors_size(r, &size), LORS_ERR_USAGE);
    EXPECT("read_at on an invented handle",
           lors_read_at((lors_reader *)(uintptr_t)0x5eed, 0, buf, sizeof buf, &got),
           LORS_ERR_USAGE);
    EXPECT("read_at on a client handle",
           lors_read_at((lors_reader *)(void *)c, 0, buf, sizeof buf, &got), LORS_ERR_USAGE);
    EXPECT("create", lors_create(c, written, NULL, &w), LORS_OK);
    EXPECT("write of length 0 from NULL", lors_write(w, NULL, 0), LORS_OK);
    EXPECT("write with data NULL and length 1", lors_write(w, NULL, 1), LORS_ERR_USAGE);
    EXPECT("write", lors_write(w, data, 1000), LORS_OK);
    EXPECT("commit", lors_commit(w, &version), LORS_OK);
    EXPECT("write after commit", lors_write(w, data, 10), LORS_ERR_USAGE);
    EXPECT("commit again", lors_commit(w, NULL), LORS_ERR_USAGE);
    EXPECT("abort after commit", lors_abort(w), LORS_ERR_USAGE);
    EXPECT("create", lors_create(c, written, NULL, &w), LORS_OK);
    EXPECT("write", lors_write(w, data, 10), LORS_OK);
    EXPECT("abort", lors_abort(w), LORS_OK);
    EXPECT("commit after abort", lors_commit(w, NULL), LORS_ERR_USAGE);
    EXPECT("stat of the written file", lors_stat(c, written, &e), LORS_OK);
    check("  the aborted write made no version", e.size == 1000 && e.version == version);
    lors_entry_clear(&e);
    lors_entry_clear(&e);
    lors_client *c2;
    EXPECT("second client", lors_client_from_env(&c2), LORS_OK);
    EXPECT("open with the second client", lors_open(c2, file, NULL, &r), LORS_OK);
    EXPECT("free the second client", lors_client_free(c2), LORS_OK);
    EXPECT("free it again", lors_client_free(c2), LORS_ERR_USAGE);
    EXPECT("stat with a freed client", lors_stat(c2, file, &e), LORS_ERR_USAGE);
    EXPECT("a reader outlives its client", lors_read_at(r, 0, buf, sizeof buf, &got), LORS_OK);
    check("  and reads the right bytes", got == sizeof buf && memcmp(buf, data, got) == 0);
    EXPECT("close it", lors_close(r), LORS_OK);

    /* Zero lengths: an empty file. */
    EXPECT("upload an empty buffer (NULL, 0)",
           lors_upload_buffer(c, NULL, 0, empty, NULL, NULL, NULL, NULL), LORS_OK);
    size = 99;
    EXPECT("download_buffer of the empty file into (NULL, 0)",
           lors_download_buffer(c, empty, NULL, 0, &size, NULL, NULL), LORS_OK);
    check("  its size is 0", size == 0);
    EXPECT("download_buffer into a buffer 1 byte too small",
           lors_download_buffer(c, file, data, FILE_SIZE - 1, &size, NULL, NULL),
           LORS_ERR_TOO_SMALL);
    check("  gives the size needed", size == FILE_SIZE);

    /* Bad options. */
    lors_upload_options o = {0};
    o.copies = 2;
    o.ec_k = 2;
    o.ec_m = 1;
    EXPECT("copies and ec together", lors_upload_buffer(c, data, 10, file, &o, NULL, NULL, NULL),
           LORS_ERR_USAGE);
    memset(&o, 0, sizeof o);
    o.ec_k = 2;
    EXPECT("ec_k without ec_m", lors_upload_buffer(c, data, 10, file, &o, NULL, NULL, NULL),
           LORS_ERR_USAGE);
    memset(&o, 0, sizeof o);
    o.security = 9;
    EXPECT("an unknown security level",
           lors_upload_buffer(c, data, 10, file, &o, NULL, NULL, NULL), LORS_ERR_USAGE);
    memset(&o, 0, sizeof o);
    o.encrypt = 5;
    EXPECT("an unknown encrypt value", lors_create(c, written, &o, &w), LORS_ERR_USAGE);
    check("  leaves no writer", w == NULL);

    /* Missing files, wrong rights. */
    EXPECT("open a missing file", lors_open(c, missing, NULL, &r), LORS_ERR_NOT_FOUND);
    check("  leaves no reader", r == NULL);
    EXPECT("stat a missing file", lors_stat(c, missing, &e), LORS_ERR_NOT_FOUND);
    lors_entry_clear(&e);
    check("  clearing the zeroed entry keeps the last error", lors_last_error()[0] != '\0');
    EXPECT("download a missing file", lors_download_file(c, missing, local_missing, NULL, NULL),
           LORS_ERR_NOT_FOUND);
    check("  leaves no local file", access(local_missing, F_OK) != 0);
    EXPECT("rm a missing file", lors_rm(c, missing), LORS_ERR_NOT_FOUND);
    EXPECT("mv a missing file", lors_mv(c, missing, empty), LORS_ERR_NOT_FOUND);
    EXPECT("mv onto an existing file", lors_mv(c, written, empty), LORS_ERR_CONFLICT);
    EXPECT("upload a missing local file",
           lors_upload_file(c, local_missing, file, NULL, NULL, NULL, NULL), LORS_ERR_LOCAL);
    EXPECT("open another user's file", lors_open(c, others, NULL, &r), LORS_ERR_REFUSED);
    EXPECT("download another user's file",
           lors_download_buffer(c, others, buf, sizeof buf, &size, NULL, NULL), LORS_ERR_REFUSED);

    /* A progress callback may not call liblors. */
    struct nested nest = {c, -1, 0};
    EXPECT("upload with a progress callback calling liblors",
           lors_upload_buffer(c, data, 5000, written, NULL, nested_call, &nest, NULL), LORS_OK);
    check("  the nested call is refused as LORS_ERR_USAGE",
          nest.calls > 0 && nest.rc == LORS_ERR_USAGE);

    /* The proxy expires under the client, then a fresh one appears. */
    EXPECT("stat before", lors_stat(c, file, &e), LORS_OK);
    lors_entry_clear(&e);
    if (rename(expired, proxy) != 0) {
        perror("rename the expired proxy");
        return 2;
    }
    EXPECT("stat with an expired proxy", lors_stat(c, file, &e), LORS_ERR_NO_PROXY);
    EXPECT("open with an expired proxy", lors_open(c, file, NULL, &r), LORS_ERR_NO_PROXY);
    if (rename(fresh, proxy) != 0) {
        perror("rename the fresh proxy");
        return 2;
    }
    EXPECT("stat with the fresh proxy", lors_stat(c, file, &e), LORS_OK);
    lors_entry_clear(&e);
    EXPECT("download with the fresh proxy",
           lors_download_buffer(c, file, data, FILE_SIZE, &size, NULL, NULL), LORS_OK);

    EXPECT("rm the directory's files", lors_rm(c, file), LORS_OK);
    EXPECT("client_free", lors_client_free(c), LORS_OK);
    printf("%d cases, %d failures\n", cases, failures);
    return failures ? 1 : 0;
}
