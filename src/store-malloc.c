/* SPDX-License-Identifier: MIT */
/* SQLite's small allocations from free lists of our own: the lookaside SQLite's Debian build leaves out. */
#include <assert.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"

/* Debian builds SQLite with SQLITE_OMIT_LOOKASIDE, so every small allocation of a statement
 * step goes to malloc(): measured, about 13 malloc()/free() pairs per MQTT message of two
 * readings, most of them the record buffers that each insert grows and each reset gives back
 * (sqlite3VdbeMemGrow, the unpacked keys of the index inserts). Those sizes repeat message after
 * message, so a free list per 16-byte size class up to POOL_MAX serves them with a push and a
 * pop, as lookaside would. Larger allocations (page cache pages, 4 KiB and more) and those past
 * a list's cap go to malloc() as before. One thread: SQLite runs single-threaded here
 * (SQLITE_CONFIG_SINGLETHREAD), so the lists need no lock.
 *
 * Every block carries a 16-byte header with its size (SQLite asks for it, xSize), which also
 * keeps the 16-byte alignment malloc() gives. A list holds at most POOL_LIST_MAX blocks: what a
 * burst of statements frees beyond that goes back to malloc(), so the lists cannot hold memory
 * the daemon no longer uses (at most 32 x 64 blocks of at most 528 bytes, about 1 MiB, and in
 * practice a few KiB). */
#define POOL_GRANULE 16
#define POOL_MAX 512
#define POOL_CLASSES (POOL_MAX / POOL_GRANULE)
#define POOL_LIST_MAX 64

typedef union PoolHeader {
        uint64_t size;
        max_align_t align;
        unsigned char pad[POOL_GRANULE];
} PoolHeader;

typedef struct PoolBlock {
        struct PoolBlock *next;
} PoolBlock;

static struct {
        PoolBlock *head[POOL_CLASSES];
        unsigned count[POOL_CLASSES];
} pool;

static int pool_roundup(int n) {
        if (n <= 0)
                return POOL_GRANULE;
        if (n <= POOL_MAX)
                return (n + POOL_GRANULE - 1) & ~(POOL_GRANULE - 1);
        return (n + 7) & ~7;
}

static void *pool_malloc(int n) {
        int size = pool_roundup(n);
        PoolHeader *h;

        if (size <= POOL_MAX) {
                unsigned c = (unsigned) size / POOL_GRANULE - 1;

                if (pool.head[c]) {
                        PoolBlock *b = pool.head[c];

                        pool.head[c] = b->next;
                        pool.count[c]--;
                        return b;
                }
        }
        h = malloc(sizeof(PoolHeader) + (size_t) size);
        if (!h)
                return NULL;
        h->size = (uint64_t) size;
        return h + 1;
}

static PoolHeader *pool_header(void *p) {
        return (PoolHeader *) p - 1;
}

static void pool_free(void *p) {
        PoolHeader *h;

        if (!p)
                return;
        h = pool_header(p);
        if (h->size <= POOL_MAX) {
                unsigned c = (unsigned) h->size / POOL_GRANULE - 1;

                if (pool.count[c] < POOL_LIST_MAX) {
                        PoolBlock *b = p;

                        b->next = pool.head[c];
                        pool.head[c] = b;
                        pool.count[c]++;
                        return;
                }
        }
        free(h);
}

static int pool_size(void *p) {
        return p ? (int) pool_header(p)->size : 0;
}

static void *pool_realloc(void *p, int n) {
        void *q;
        int old;

        if (!p)
                return pool_malloc(n);
        old = pool_size(p);
        if (pool_roundup(n) == old)
                return p;
        q = pool_malloc(n);
        if (!q)
                return NULL; /* p stays valid, as SQLite expects */
        memcpy(q, p, (size_t) (old < n ? old : n));
        pool_free(p);
        return q;
}

static int pool_init(void *userdata) {
        (void) userdata;
        return SQLITE_OK;
}

/* At sqlite3_shutdown(): the lists go back to malloc(). */
static void pool_shutdown(void *userdata) {
        (void) userdata;
        for (size_t c = 0; c < POOL_CLASSES; c++) {
                while (pool.head[c]) {
                        PoolBlock *b = pool.head[c];

                        pool.head[c] = b->next;
                        free(pool_header(b));
                }
                pool.count[c] = 0;
        }
}

void store_malloc_install(void) {
        static const sqlite3_mem_methods methods = {
                .xMalloc = pool_malloc,
                .xFree = pool_free,
                .xRealloc = pool_realloc,
                .xSize = pool_size,
                .xRoundup = pool_roundup,
                .xInit = pool_init,
                .xShutdown = pool_shutdown,
        };

/* Under AddressSanitizer SQLite keeps the system allocator, so that the sanitizer still sees
 * each of its allocations (a block on a free list is not "freed" to it). */
#if defined(__SANITIZE_ADDRESS__)
        return;
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
        return;
#  endif
#endif
        (void) sqlite3_config(SQLITE_CONFIG_MALLOC, &methods);
}
