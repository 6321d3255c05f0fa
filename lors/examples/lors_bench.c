/*
 * lors_bench: liblors measured from one C process; run by
 * benches/benches/liblors_ops.rs, which starts the grid and reads the
 * "key value" lines printed here.
 *
 *   lors_bench small DIR THREADS COUNT    4 KiB files: COUNT puts then COUNT gets,
 *                                          THREADS at once, one client
 *   lors_bench random PATH THREADS COUNT  COUNT reads of 4 KiB at random offsets,
 *                                          one reader shared by THREADS, no
 *                                          read-ahead, a cache of one extent
 *   lors_bench seq PATH                   the whole file with lors_read (8 MiB calls)
 *
 * Exits 1 if a read returned wrong bytes or a call failed.
 */

#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lors.h>

#define SMALL 4096

static lors_client *client;
static atomic_int failed;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void fail(const char *what, int rc)
{
    if (atomic_fetch_add(&failed, 1) < 5)
        fprintf(stderr, "lors_bench: %s: %s: %s\n", what, lors_error_name(rc), lors_last_error());
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(seed * 131u + i * 7u + (i >> 9));
}

struct small_job {
    const char *dir;
    int first, count, get;
};

static void *small_work(void *p)
{
    struct small_job *j = p;
    unsigned char data[SMALL], back[SMALL];
    char path[1024];
    for (int i = j->first; i < j->first + j->count; i++) {
        snprintf(path, sizeof path, "%s/f%06d", j->dir, i);
        fill(data, SMALL, (unsigned)i);
        int rc;
        if (!j->get) {
            rc = lors_upload_buffer(client, data, SMALL, path, NULL, NULL, NULL, NULL);
            if (rc != LORS_OK)
                fail("lors_upload_buffer", rc);
        } else {
            uint64_t size;
            rc = lors_download_buffer(client, path, back, SMALL, &size, NULL, NULL);
            if (rc != LORS_OK)
                fail("lors_download_buffer", rc);
            else if (size != SMALL || memcmp(back, data, SMALL) != 0)
                fail("lors_download_buffer: wrong bytes", 0);
        }
    }
    return NULL;
}

static double run_small(const char *dir, int threads, int count, int get)
{
    pthread_t t[256];
    struct small_job jobs[256];
    double t0 = now();
    for (int i = 0; i < threads; i++) {
        jobs[i].dir = dir;
        jobs[i].count = count / threads + (i < count % threads);
        jobs[i].first = i * (count / threads) + (i < count % threads ? i : count % threads);
        jobs[i].get = get;
        pthread_create(&t[i], NULL, small_work, &jobs[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return now() - t0;
}

struct random_job {
    lors_reader *r;
    uint64_t size;
    int count;
    unsigned seed;
};

static void *random_work(void *p)
{
    struct random_job *j = p;
    unsigned char buf[SMALL];
    uint64_t x = 0x9e3779b97f4a7c15ULL * (j->seed + 1);
    for (int i = 0; i < j->count; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t off = x % (j->size - SMALL);
        size_t got;
        int rc = lors_read_at(j->r, off, buf, SMALL, &got);
        if (rc != LORS_OK)
            fail("lors_read_at", rc);
        else if (got != SMALL)
            fail("lors_read_at: short read", 0);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s small DIR THREADS COUNT | random PATH THREADS COUNT | seq PATH\n",
                argv[0]);
        return 2;
    }
    int rc = lors_client_from_env(&client);
    if (rc != LORS_OK) {
        fail("lors_client_from_env", rc);
        return 1;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "small") == 0 && argc == 5) {
        int threads = atoi(argv[3]), count = atoi(argv[4]);
        if (threads < 1 || threads > 256 || count < threads)
            return 2;
        rc = lors_mkdir(client, argv[2], 1);
        if (rc != LORS_OK)
            fail("lors_mkdir", rc);
        double put = run_small(argv[2], threads, count, 0);
        double get = run_small(argv[2], threads, count, 1);
        printf("put_per_s %.1f\nget_per_s %.1f\n", count / put, count / get);
    } else if (strcmp(mode, "random") == 0 && argc == 5) {
        int threads = atoi(argv[3]), count = atoi(argv[4]);
        if (threads < 1 || threads > 256 || count < threads)
            return 2;
        lors_reader_options o = {0};
        o.cache_bytes = 1; /* one extent: every read of another block misses */
        o.read_ahead = -1;
        lors_reader *r;
        rc = lors_open(client, argv[2], &o, &r);
        if (rc != LORS_OK) {
            fail("lors_open", rc);
            return 1;
        }
        uint64_t size;
        lors_size(r, &size);
        pthread_t t[256];
        struct random_job jobs[256];
        double t0 = now();
        for (int i = 0; i < threads; i++) {
            jobs[i].r = r;
            jobs[i].size = size;
            jobs[i].count = count / threads;
            jobs[i].seed = (unsigned)i;
            pthread_create(&t[i], NULL, random_work, &jobs[i]);
        }
        for (int i = 0; i < threads; i++)
            pthread_join(t[i], NULL);
        double secs = now() - t0;
        printf("random_reads_per_s %.1f\n", (count / threads) * threads / secs);
        lors_close(r);
    } else if (strcmp(mode, "seq") == 0 && argc == 3) {
        lors_reader *r;
        double t0 = now();
        rc = lors_open(client, argv[2], NULL, &r);
        if (rc != LORS_OK) {
            fail("lors_open", rc);
            return 1;
        }
        size_t cap = 8 << 20, got;
        unsigned char *buf = malloc(cap);
        uint64_t total = 0;
        for (;;) {
            rc = lors_read(r, buf, cap, &got);
            if (rc != LORS_OK) {
                fail("lors_read", rc);
                break;
            }
            if (got == 0)
                break;
            total += got;
        }
        double secs = now() - t0;
        printf("seq_bytes %" PRIu64 "\nseq_seconds %.3f\n", total, secs);
        free(buf);
        lors_close(r);
    } else {
        return 2;
    }
    lors_client_free(client);
    return atomic_load(&failed) ? 1 : 0;
}
