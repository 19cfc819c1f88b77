/* SPDX-License-Identifier: MIT */
/* Unit tests of SQLite's allocator as the store sets it up: sizes, reallocation, reuse. */
#include <sqlite3.h>
#include <string.h>

#include "collector/store.h"
#include "testlib.h"

/* The store installs its allocator before SQLite initializes: creating a store task does. */
static void setup_store_allocator(void) {
        char path[512];
        StoreConfig config;
        sd_event *e = NULL;
        Task *t = NULL;
        Store *s = NULL;

        ck_assert_int_ge(sd_event_new(&e), 0);
        tl_store_config_init(&config, path, sizeof(path), NULL);
        ck_assert_int_eq(store_task_new(e, &config, &t, &s), 0);
        task_free(t);
        sd_event_unref(e);
}

/* Table: every size SQLite may ask for keeps what was written, and sqlite3_msize() is at least
 * the size asked, across the small classes, their edges and beyond them. */
START_TEST(test_sizes_and_realloc) {
        static const int sizes[] = { 1, 8, 15, 16, 17, 31, 32, 100, 255, 256, 511, 512, 513, 1000, 4096, 70000 };

        setup_store_allocator();
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                int n = sizes[i];
                unsigned char *p = sqlite3_malloc(n);

                ck_assert_ptr_nonnull(p);
                ck_assert_int_ge((int) sqlite3_msize(p), n);
                ck_assert_uint_eq((uintptr_t) p % 8, 0);
                memset(p, 0xa5, (size_t) n);
                for (size_t j = 0; j < ELEMENTSOF(sizes); j++) {
                        int m = sizes[j], keep = n < m ? n : m;
                        unsigned char *q = sqlite3_malloc(n);

                        ck_assert_ptr_nonnull(q);
                        memset(q, (int) j, (size_t) n);
                        q = sqlite3_realloc(q, m);
                        ck_assert_ptr_nonnull(q);
                        ck_assert_int_ge((int) sqlite3_msize(q), m);
                        for (int k = 0; k < keep; k++)
                                ck_assert_uint_eq(q[k], (unsigned) j);
                        sqlite3_free(q);
                }
                for (int k = 0; k < n; k++)
                        ck_assert_uint_eq(p[k], 0xa5);
                sqlite3_free(p);
        }
}
END_TEST

/* Many blocks of one size alive at once, freed, and taken again: nothing is handed out twice. */
START_TEST(test_many_blocks) {
        enum { N = 500 };
        unsigned char *p[N];

        setup_store_allocator();
        for (int round = 0; round < 3; round++) {
                for (int i = 0; i < N; i++) {
                        p[i] = sqlite3_malloc(48);
                        ck_assert_ptr_nonnull(p[i]);
                        memset(p[i], i & 0xff, 48);
                }
                for (int i = 0; i < N; i++)
                        for (int k = 0; k < 48; k++)
                                ck_assert_uint_eq(p[i][k], (unsigned) (i & 0xff));
                for (int i = 0; i < N; i++)
                        sqlite3_free(p[i]);
        }
}
END_TEST

static Suite *malloc_suite(void) {
        Suite *s = suite_create("store-malloc");
        TCase *tc = tcase_create("allocator");

        tcase_add_test(tc, test_sizes_and_realloc);
        tcase_add_test(tc, test_many_blocks);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(malloc_suite());
}
