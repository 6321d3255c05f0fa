/*
 * lors_example: the liblors C API end to end (docs/liblors.md).
 *
 *   lors_example LOCAL_FILE DIR OUT_FILE
 *
 * As the user whose configuration and LORS_* variables are in the
 * environment (as for the `lors` command): uploads LOCAL_FILE to
 * DIR/example.dat (two copies, 1 MiB blocks), reads a slice of it with
 * lors_read_at, streams the whole file with lors_read, downloads it to
 * OUT_FILE, and compares checksums (FNV-1a, 64 bits) of all of these with
 * the local file. Then the namespace: a file written through a handle,
 * listed, moved, refreshed, the user's usage, and removed.
 *
 * Prints one line per step; exits 0 when everything matched, 1 on a
 * mismatch, 2 when a call failed.
 *
 * Build: cc -o lors_example lors_example.c $(pkg-config --cflags --libs lors)
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lors.h>

static void die(const char *what, int rc)
{
    fprintf(stderr, "lors_example: %s: %s (%d): %s\n", what, lors_error_name(rc), rc,
            lors_last_error());
    exit(2);
}

#define CALL(what, call)                                                                          \
    do {                                                                                          \
        int rc_ = (call);                                                                         \
        if (rc_ != LORS_OK)                                                                       \
            die(what, rc_);                                                                       \
    } while (0)

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

#define FNV_START 0xcbf29ce484222325ULL

static unsigned char *read_local(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fprintf(stderr, "lors_example: out of memory\n");
            exit(2);
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        cap *= 2;
        buf = realloc(buf, cap);
    }
    if (ferror(f)) {
        perror(path);
        exit(2);
    }
    fclose(f);
    *len = n;
    return buf;
}

struct progress {
    unsigned calls;
    uint64_t done, total;
};

static void on_progress(uint64_t done, uint64_t total, void *data)
{
    struct progress *p = data;
    p->calls++;
    p->done = done;
    p->total = total;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s LOCAL_FILE DIR OUT_FILE\n", argv[0]);
        return 2;
    }
    const char *local = argv[1], *dir = argv[2], *out = argv[3];
    int mismatches = 0;
    char path[1024], moved[1024], written[1024];
    snprintf(path, sizeof path, "%s/example.dat", dir);
    snprintf(written, sizeof written, "%s/written.dat", dir);
    snprintf(moved, sizeof moved, "%s/moved.dat", dir);
    printf("liblors %s\n", lors_version());

    size_t len;
    unsigned char *data = read_local(local, &len);
    uint64_t want = fnv1a(FNV_START, data, len);
    printf("local %s: %zu bytes, fnv1a %016" PRIx64 "\n", local, len, want);

    lors_client *c;
    CALL("lors_client_from_env", lors_client_from_env(&c));
    CALL("lors_mkdir", lors_mkdir(c, dir, 1));

    /* Upload: two copies of 1 MiB blocks, the rest as configured. */
    lors_upload_options up = {0};
    up.copies = 2;
    up.block_size = 1 << 20;
    struct progress pr = {0};
    uint64_t version;
    CALL("lors_upload_file", lors_upload_file(c, local, path, &up, on_progress, &pr, &version));
    printf("uploaded %s version %" PRIu64 " (progress: %u calls, last %" PRIu64 "/%" PRIu64
           ")\n",
           path, version, pr.calls, pr.done, pr.total);
    if (pr.calls == 0 || pr.done != len || pr.total != len) {
        printf("MISMATCH: upload progress\n");
        mismatches++;
    }

    lors_entry st;
    CALL("lors_stat", lors_stat(c, path, &st));
    printf("stat %s: %" PRIu64 " bytes, version %" PRIu64 ", rights %s\n", st.path, st.size,
           st.version, st.rights ? st.rights : "?");
    if (st.size != len || st.kind != LORS_KIND_FILE) {
        printf("MISMATCH: stat\n");
        mismatches++;
    }
    lors_entry_clear(&st);

    /* Ranged read: a slice from the middle, then past the end. */
    lors_reader *r;
    CALL("lors_open", lors_open(c, path, NULL, &r));
    uint64_t size;
    CALL("lors_size", lors_size(r, &size));
    uint64_t off = size / 3;
    size_t want_n = size - off < 100000 ? (size_t)(size - off) : 100000;
    unsigned char *slice = malloc(want_n + 1);
    size_t got;
    CALL("lors_read_at", lors_read_at(r, off, slice, want_n, &got));
    int slice_ok = got == want_n && memcmp(slice, data + off, got) == 0;
    printf("slice at %" PRIu64 ": %zu bytes %s\n", off, got, slice_ok ? "match" : "DIFFER");
    mismatches += !slice_ok;
    CALL("lors_read_at", lors_read_at(r, size, slice, want_n, &got));
    printf("read at the end: %zu bytes\n", got);
    mismatches += got != 0;
    free(slice);

    /* Streaming read of the whole file. */
    unsigned char buf[65536];
    uint64_t h = FNV_START, total = 0;
    for (;;) {
        CALL("lors_read", lors_read(r, buf, sizeof buf, &got));
        if (got == 0)
            break;
        h = fnv1a(h, buf, got);
        total += got;
    }
    CALL("lors_close", lors_close(r));
    printf("stream: %" PRIu64 " bytes, fnv1a %016" PRIx64 "\n", total, h);
    if (total != len || h != want) {
        printf("MISMATCH: stream\n");
        mismatches++;
    }

    /* Download to a file. */
    struct progress dp = {0};
    CALL("lors_download_file", lors_download_file(c, path, out, on_progress, &dp));
    size_t out_len;
    unsigned char *back = read_local(out, &out_len);
    uint64_t hd = fnv1a(FNV_START, back, out_len);
    free(back);
    printf("download %s: %zu bytes, fnv1a %016" PRIx64 "\n", out, out_len, hd);
    if (out_len != len || hd != want) {
        printf("MISMATCH: download\n");
        mismatches++;
    }

    /* The namespace: write through a handle, list, move, refresh, usage, remove. */
    lors_writer *w;
    CALL("lors_create", lors_create(c, written, NULL, &w));
    for (size_t at = 0; at < len; at += 300000) {
        size_t n = len - at < 300000 ? len - at : 300000;
        CALL("lors_write", lors_write(w, data + at, n));
    }
    CALL("lors_commit", lors_commit(w, &version));
    uint64_t wsize;
    unsigned char *wbuf = malloc(len + 1);
    CALL("lors_download_buffer", lors_download_buffer(c, written, wbuf, len + 1, &wsize, NULL, NULL));
    int written_ok = wsize == len && memcmp(wbuf, data, len) == 0;
    free(wbuf);
    printf("written %s version %" PRIu64 ": %s\n", written, version,
           written_ok ? "match" : "DIFFER");
    mismatches += !written_ok;

    CALL("lors_mv", lors_mv(c, written, moved));
    lors_entry *list;
    size_t count;
    CALL("lors_list", lors_list(c, dir, &list, &count));
    printf("list %s:", dir);
    for (size_t i = 0; i < count; i++)
        printf(" %s(%" PRIu64 ")", list[i].path, list[i].size);
    printf("\n");
    lors_list_free(list, count);
    CALL("lors_refresh", lors_refresh(c, moved, 3600));
    lors_usage_info u;
    CALL("lors_usage", lors_usage(c, &u));
    printf("usage: %" PRIu64 " files, %" PRIu64 " bytes stored\n", u.files, u.stored);
    CALL("lors_rm", lors_rm(c, moved));
    int rc = lors_stat(c, moved, &st);
    printf("after lors_rm: %s\n", lors_error_name(rc));
    mismatches += rc != LORS_ERR_NOT_FOUND;

    CALL("lors_client_free", lors_client_free(c));
    free(data);
    if (mismatches) {
        printf("%d MISMATCH(ES)\n", mismatches);
        return 1;
    }
    printf("checksums match: fnv1a %016" PRIx64 "\n", want);
    return 0;
}
