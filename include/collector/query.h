/* SPDX-License-Identifier: MIT */
/* `sensor-collector query`: a read-only look at the store for people on the gateway. */
#pragma once

/* Parses its own options (argv[0] is "query") and prints readings, latest values, counts or
 * rejects. Returns a process exit status: 0, 64 for bad usage, 1 for an unreadable database. */
int query_main(int argc, char **argv);
