/* SPDX-License-Identifier: MIT */
/* The configuration file: JSON in, a validated Config out, every error with its location. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/frame.h"
#include "collector/macro.h"

#define CONFIG_DEFAULT_PATH "/etc/sensor-collector/sensor-collector.json"
#define STORE_DEFAULT_PATH "/var/lib/sensor-collector/readings.db"

typedef enum SerialParity {
        SERIAL_PARITY_NONE,
        SERIAL_PARITY_ODD,
        SERIAL_PARITY_EVEN,
        SERIAL_PARITY_MARK,
        SERIAL_PARITY_SPACE,
        _SERIAL_PARITY_MAX,
        _SERIAL_PARITY_INVALID = -EINVAL,
} SerialParity;

typedef enum SerialFlowControl {
        SERIAL_FLOW_CONTROL_NONE,
        SERIAL_FLOW_CONTROL_XONXOFF,
        SERIAL_FLOW_CONTROL_RTSCTS,
        _SERIAL_FLOW_CONTROL_MAX,
        _SERIAL_FLOW_CONTROL_INVALID = -EINVAL,
} SerialFlowControl;

typedef enum StoreSynchronous {
        STORE_SYNCHRONOUS_NORMAL,
        STORE_SYNCHRONOUS_FULL,
        _STORE_SYNCHRONOUS_MAX,
        _STORE_SYNCHRONOUS_INVALID = -EINVAL,
} StoreSynchronous;

typedef enum MqttProtocol {
        MQTT_PROTOCOL_V311,
        MQTT_PROTOCOL_V5,
        _MQTT_PROTOCOL_MAX,
        _MQTT_PROTOCOL_INVALID = -EINVAL,
} MqttProtocol;

typedef struct SerialConfig {
        bool enabled;
        char *device;                 /* path, e.g. /dev/serial/by-id/... */
        uint32_t baud;
        unsigned data_bits;           /* 5..8 */
        SerialParity parity;
        unsigned stop_bits;           /* 1 or 2 */
        SerialFlowControl flow_control;
        FrameFormat format;           /* json or kv */
        FrameChecksum checksum;
        size_t max_frame_bytes;
        LineEnd line_end;             /* what ends a line: lf (default), cr or any */
        uint64_t reopen_timeout_usec; /* give up (exit 10) after the port is gone this long */
        uint64_t idle_timeout_usec;   /* 0 = off */
} SerialConfig;

typedef struct MqttTopicConfig {
        char *filter;                 /* subscription filter with named wildcards, see frame.h */
        int qos;                      /* 0..2 */
        FrameFormat format;           /* json or value */
        char *sensor;                 /* fixed sensor id, or NULL (from topic or payload) */
        char *metric;                 /* fixed metric name for value payloads, or NULL */
} MqttTopicConfig;

typedef struct MqttConfig {
        bool enabled;
        char *host;
        uint16_t port;
        char *client_id;              /* never NULL after config_load(): derived from host name */
        MqttProtocol protocol;
        bool clean_session;
        uint32_t session_expiry;      /* seconds, MQTT 5 only */
        unsigned keepalive;           /* seconds */
        char *username;               /* or NULL */
        char *password_file;          /* or NULL; also looked up in $CREDENTIALS_DIRECTORY */
        char *cafile;                 /* TLS when cafile or capath is set */
        char *capath;
        char *certfile;
        char *keyfile;
        char *tls_version;            /* "tlsv1.2", "tlsv1.3" or NULL */
        uint64_t max_offline_usec;    /* give up (exit 11) after offline this long */
        size_t max_payload_bytes;
        MqttTopicConfig *topics;
        size_t n_topics;
} MqttConfig;

/* Distinct names in use per name table by default: far more sensors, metrics and topics than a
 * greenhouse has, far fewer than a node with a counter in its topic makes (docs/STORE.md). */
#define STORE_DEFAULT_MAX_NAMES 10000

typedef struct StoreConfig {
        char *path;
        StoreSynchronous synchronous;
        unsigned commit_interval_ms;
        unsigned commit_max_rows;
        unsigned retention_days;      /* 0 = keep forever */
        unsigned max_size_mb;         /* 0 = no size limit */
        unsigned max_names;           /* names in use per name table (sensors, metrics, origins); 0 = no cap */
} StoreConfig;

/* What makes the wall clock trustworthy (clock.trust, see clock.h and docs/STORE.md). */
typedef enum ClockTrust {
        CLOCK_TRUST_AUTO,             /* wait for synchronisation when something will synchronise it */
        CLOCK_TRUST_SYNC,             /* trust only a synchronised clock */
        CLOCK_TRUST_ALWAYS,           /* trust it as it is: a battery-backed RTC, a host-kept VM clock */
        _CLOCK_TRUST_MAX,
        _CLOCK_TRUST_INVALID = -EINVAL,
} ClockTrust;

typedef struct ClockConfig {
        ClockTrust trust;
        uint64_t sensor_ts_tolerance_usec; /* sensor time this far from a trusted clock: suspect_ts */
} ClockConfig;

/* Forwarding to a central broker (upstream-task.c, docs/UPSTREAM.md). */
typedef struct UpstreamConfig {
        bool enabled;                 /* off by default */
        char *host;
        uint16_t port;
        MqttProtocol protocol;
        char *client_id;              /* never NULL after config_load(): derived from gateway_id */
        char *gateway_id;             /* never NULL after config_load(): the short host name */
        unsigned keepalive;           /* seconds */
        char *username;               /* or NULL */
        char *password_file;          /* or NULL; also looked up in $CREDENTIALS_DIRECTORY */
        char *cafile;                 /* TLS when cafile or capath is set */
        char *capath;
        char *certfile;
        char *keyfile;
        char *tls_version;
        char *topic;                  /* live readings: a template with {gateway} {store} {sensor} {metric} */
        char *backlog_topic;          /* backlog batches: {gateway} {store} */
        char *live_batch_topic;       /* or NULL (one message per live reading): live readings grouped, {gateway} {store} */
        char *status_topic;           /* retained online/offline, the last will */
        int qos;                      /* 1 or 2 */
        unsigned max_inflight;        /* PUBLISHes awaiting their acknowledgement */
        unsigned backlog_rate;        /* backlog readings per second */
        unsigned batch_size;          /* backlog readings per message */
} UpstreamConfig;

typedef struct LogConfig {
        int level;                    /* LOG_ERR .. LOG_DEBUG */
} LogConfig;

typedef struct SupervisorConfig {
        uint64_t stop_timeout_usec;
        uint64_t status_interval_usec;
} SupervisorConfig;

/* The sensor map (section "sensors"): what should arrive, how often, and in which range. */
typedef enum SensorUnknownPolicy {
        SENSOR_UNKNOWN_STORE,         /* sensors not in the map are stored as any other */
        SENSOR_UNKNOWN_REJECT,        /* ... or rejected with reason unknown_sensor */
        _SENSOR_UNKNOWN_MAX,
        _SENSOR_UNKNOWN_INVALID = -EINVAL,
} SensorUnknownPolicy;

typedef struct SensorMetricConfig {
        char *name;
        bool has_min, has_max;
        double min, max;              /* inclusive; a value outside is rejected (out_of_range) */
        char *unit;                   /* or NULL; shown with the range in events */
        uint64_t expect_every_usec;   /* 0: the metric on its own is not watched for silence */
} SensorMetricConfig;

typedef struct SensorEntryConfig {
        char *id;                     /* a sensor id, or a pattern with '*' and '?' */
        bool is_pattern;
        uint64_t expect_every_usec;   /* 0: no silence check for it */
        SensorMetricConfig *metrics;
        size_t n_metrics;
} SensorEntryConfig;

typedef struct SensorMapConfig {
        SensorUnknownPolicy unknown;
        unsigned stale_after;         /* silent after stale_after x expect_every */
        SensorEntryConfig *entries;   /* in file order: exact ids win, then the first pattern */
        size_t n_entries;
} SensorMapConfig;

typedef struct Config {
        char *path;                   /* the file it came from */
        SerialConfig serial;
        MqttConfig mqtt;
        StoreConfig store;
        ClockConfig clock;
        LogConfig log;
        SupervisorConfig supervisor;
        SensorMapConfig sensors;
        UpstreamConfig upstream;
} Config;

/* Reads and validates a config file. On success returns 0 and *ret_config (owned by the
 * caller, free with config_free()). On failure returns -EINVAL (invalid: syntax or semantic
 * errors), or -errno when the file cannot be read, and *ret_errors gets a NULL-terminated list
 * of messages, every error found, each naming its location: "FILE:LINE:COLUMN: ..." for syntax,
 * "FILE: /json/path: ..." for semantic errors (owned by the caller, free with strv_free()).
 * Logs nothing. ret_errors may be NULL. */
int config_load(const char *path, Config **ret_config, char ***ret_errors);

/* The same from memory; name is used in messages in place of the file name. */
int config_parse(const char *name, const char *text, size_t size, Config **ret_config,
                 char ***ret_errors);

/* Accepts NULL; returns NULL. */
Config *config_free(Config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Config *, config_free);

const char *serial_parity_to_string(SerialParity p);
const char *sensor_unknown_policy_to_string(SensorUnknownPolicy p);
/* Frees what a SensorMapConfig holds (not the struct itself) and zeroes it. Accepts NULL. */
void sensor_map_config_done(SensorMapConfig *m);
const char *serial_flow_control_to_string(SerialFlowControl f);
const char *store_synchronous_to_string(StoreSynchronous s);
const char *mqtt_protocol_to_string(MqttProtocol p);
const char *clock_trust_to_string(ClockTrust t);

/* True for the standard rates 50..921600 (see config/README.md); others need "custom_baud". */
bool serial_baud_is_standard(uint32_t baud);
