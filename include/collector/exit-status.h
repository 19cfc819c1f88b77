/* SPDX-License-Identifier: MIT */
/* The process exit status: stable, documented in README and sensor-collector(8). */
#pragma once

enum {
        EXIT_STATUS_OK = 0,            /* stopped on request */
        EXIT_STATUS_UNEXPECTED = 1,    /* anything else */
        EXIT_STATUS_SERIAL = 10,       /* serial task failed */
        EXIT_STATUS_MQTT = 11,         /* MQTT task failed */
        EXIT_STATUS_STORE = 12,        /* store failed */
        EXIT_STATUS_STOP_TIMEOUT = 13, /* tasks did not stop within the stop timeout */
        EXIT_STATUS_UPSTREAM = 14,     /* upstream refused for good (credentials, authorization) */
        EXIT_STATUS_USAGE = 64,        /* bad command line, nothing to collect */
        EXIT_STATUS_CONFIG = 78,       /* invalid configuration */
};
