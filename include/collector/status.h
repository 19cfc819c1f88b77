/* SPDX-License-Identifier: MIT */
/* `sensor-collector status`: asks the running daemon through its status socket. */
#pragma once

/* Exit statuses of `status`, as the LSB's for init scripts (and `systemctl status`). */
#define STATUS_EXIT_HEALTHY 0         /* running, every input and the store healthy */
#define STATUS_EXIT_DEGRADED 1        /* running, but something is not (an input reconnecting) */
#define STATUS_EXIT_NOT_RUNNING 3     /* no socket, or nobody answers on it */
#define STATUS_EXIT_UNKNOWN 4         /* could not ask: access denied, a bad or no answer */

/* Parses its own options (argv[0] is "status"), asks the daemon and prints the answer on stdout
 * (text, json, prometheus or openmetrics), problems on stderr. Returns a process exit status:
 * the four above, or 64 for bad usage. */
int status_main(int argc, char **argv);
