/* SPDX-License-Identifier: MIT */
/* Placeholder until the module lands. */
#include "collector/query.h"
int query_main(int argc, char **argv) { (void) argc; (void) argv; return 1; }
