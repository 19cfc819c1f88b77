/* SPDX-License-Identifier: MIT */
/* sensor-collector: reads sensor frames from a serial port and MQTT, stores every reading durably. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "collector/clock.h"
#include "collector/config.h"
#include "collector/list-ports.h"
#include "collector/log.h"
#include "collector/mqtt-task.h"
#include "collector/upstream-task.h"
#include "collector/query.h"
#include "collector/reload.h"
#include "collector/sensor-map-diff.h"
#include "collector/sensors.h"
#include "collector/serial-task.h"
#include "collector/status-sections.h"
#include "collector/status.h"
#include "collector/store.h"
#include "collector/supervisor.h"

typedef struct Args {
        const char *config_path;
        bool no_serial;
        bool no_mqtt;
        bool check_config;
        int log_level;                /* -1: from the config */
        const char *socket_path;      /* --socket; NULL: $RUNTIME_DIRECTORY/status.sock, if set */
} Args;

static const char usage_line[] =
        "Usage: sensor-collector [-c|--config FILE] [--no-serial] [--no-mqtt] [--check-config]\n"
        "                        [--log-level debug|info|notice|warning|err] [--socket PATH]\n"
        "                        [--version] [--help]\n"
        "       sensor-collector status [OPTIONS]   (see sensor-collector status --help)\n"
        "       sensor-collector query [OPTIONS]    (see sensor-collector query --help)\n"
        "       sensor-collector list-ports\n";

static void help(void) {
        printf("%s\n"
               "Collects sensor readings from a serial port and MQTT into a SQLite store.\n\n"
               "  -c, --config FILE     configuration file (default %s)\n"
               "      --no-serial       do not read the serial port, whatever the config says\n"
               "      --no-mqtt         do not subscribe to MQTT, whatever the config says\n"
               "      --check-config    validate the configuration, print the result, exit\n"
               "      --log-level LEVEL debug, info, notice, warning or err\n"
               "      --socket PATH     the status socket (default: status.sock in $RUNTIME_DIRECTORY,\n"
               "                        which systemd sets; without either, no status socket)\n"
               "      --version         print the version and exit\n"
               "  -h, --help            print this help and exit\n\n"
               "Exit status: 0 stopped on request, 10 serial failed, 11 MQTT failed, 12 store failed,\n"
               "13 stop timed out, 64 bad usage or nothing to collect, 78 bad configuration, 1 other.\n",
               usage_line, CONFIG_DEFAULT_PATH);
}

/* Returns 0 to go on, 1 when done (help, version), or -EINVAL after printing the problem. */
static int parse_args(int argc, char **argv, Args *args) {
        enum { ARG_NO_SERIAL = 0x100, ARG_NO_MQTT, ARG_CHECK_CONFIG, ARG_LOG_LEVEL, ARG_VERSION, ARG_SOCKET };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "no-serial", no_argument, NULL, ARG_NO_SERIAL },
                { "no-mqtt", no_argument, NULL, ARG_NO_MQTT },
                { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "version", no_argument, NULL, ARG_VERSION },
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c;

        *args = (Args){ .config_path = CONFIG_DEFAULT_PATH, .log_level = -1 };
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":c:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        args->config_path = optarg;
                        break;
                case ARG_NO_SERIAL:
                        args->no_serial = true;
                        break;
                case ARG_NO_MQTT:
                        args->no_mqtt = true;
                        break;
                case ARG_CHECK_CONFIG:
                        args->check_config = true;
                        break;
                case ARG_LOG_LEVEL:
                        args->log_level = log_level_from_string(optarg);
                        if (args->log_level < 0) {
                                fprintf(stderr, "sensor-collector: invalid --log-level '%s' (debug, info, notice, warning, err)\n%s",
                                        optarg, usage_line);
                                return -EINVAL;
                        }
                        break;
                case ARG_VERSION:
                        printf("sensor-collector %s\n", SC_VERSION);
                        return 1;
                case ARG_SOCKET:
                        if (!optarg[0]) {
                                fprintf(stderr, "sensor-collector: --socket needs a path\n%s", usage_line);
                                return -EINVAL;
                        }
                        args->socket_path = optarg;
                        break;
                case 'h':
                        help();
                        return 1;
                case ':':
                        fprintf(stderr, "sensor-collector: option '%s' needs a value\n%s", argv[optind - 1], usage_line);
                        return -EINVAL;
                default:
                        fprintf(stderr, "sensor-collector: unknown option '%s'\n%s", argv[optind - 1], usage_line);
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "sensor-collector: unexpected argument '%s'\n%s", argv[optind], usage_line);
                return -EINVAL;
        }
        return 0;
}

/* A file that is wrong stays wrong: 78, and systemd does not restart. A read that failed for
 * another reason (an I/O error on the SD card, out of memory) may work next time: 1, restart. */
static int config_exit_status(int r) {
        switch (r) {
        case -EINVAL:
        case -EFBIG:
        case -ENOENT:
        case -ENOTDIR:
        case -EISDIR:
        case -EACCES:
        case -EPERM:
        case -ELOOP:
        case -ENAMETOOLONG:
                return EXIT_STATUS_CONFIG;
        default:
                return EXIT_STATUS_UNEXPECTED;
        }
}

/* Builds the tasks in the order they start: the store first, so that it stops last; the clock
 * next, so that it has judged the clock before the first reading arrives. */
static int add_tasks(Supervisor *s, const Config *config, Store **ret_store, Clock **ret_clock,
                     Sensors **ret_sensors, Upstream **ret_upstream) {
        sd_event *e = supervisor_get_event(s);
        Clock *clock = NULL;
        Sensors *sensors = NULL;
        Upstream *upstream = NULL;
        Store *store;
        Task *t;
        int r;

        r = store_task_new(e, &config->store, &t, &store);
        if (r >= 0)
                r = supervisor_add_task(s, t);
        /* After the store (it reads last-seen times from it), before the inputs that feed it
         * and before upstream, which takes the units of the map from it. */
        if (r >= 0) {
                r = sensors_task_new(e, &config->sensors, store, &t, &sensors);
                if (r >= 0)
                        r = supervisor_add_task(s, t);
        }
        /* Before the inputs: it stops after them (what they stored is forwarded) and before
         * the store (what was acknowledged is written to it). */
        if (r >= 0 && config->upstream.enabled) {
                r = upstream_task_new(e, &config->upstream, store, sensors, &t, &upstream);
                if (r >= 0)
                        r = supervisor_add_task(s, t);
        }
        if (r >= 0) {
                r = clock_task_new(e, &config->clock, store, &t, &clock);
                if (r >= 0)
                        r = supervisor_add_task(s, t);
        }
        if (r >= 0) {
                *ret_store = store;
                *ret_clock = clock;
                *ret_sensors = sensors;
                *ret_upstream = upstream;
        }
        if (r >= 0 && config->serial.enabled) {
                r = serial_task_new(e, &config->serial, store, clock, sensors, &t);
                if (r >= 0)
                        r = supervisor_add_task(s, t);
        }
        if (r >= 0 && config->mqtt.enabled) {
                r = mqtt_task_new(e, &config->mqtt, store, clock, sensors, &t);
                if (r >= 0)
                        r = supervisor_add_task(s, t);
        }
        return r;
}

/* The reload hook of the sensor map: the new map takes over, each sensor keeps its last-seen
 * time and silence. The map stays in next, which the Reload keeps until the following reload. */
static int reload_sensor_map(const Config *old, const Config *next, void *userdata) {
        char what[512];
        int r = sensors_set_map(userdata, &next->sensors);

        /* Said at notice, as a log level change is: a reload should show what it did. */
        if (r >= 0 && sensor_map_diff(&old->sensors, &next->sensors, what, sizeof(what)) > 0)
                log_notice("Sensor map changed: %s.", what);
        return r;
}

/* SIGHUP reloads the file given at start, with the same command line applied to it. Hooks for
 * what else can change at run time register on the Reload here. */
static int add_reload(Supervisor *s, const Config *config, const Args *args, Sensors *sensors, Reload **ret) {
        int r;

        r = reload_new(config, &(ReloadOptions){ .path = args->config_path, .log_level_override = args->log_level,
                                                 .no_serial = args->no_serial, .no_mqtt = args->no_mqtt },
                       ret);
        if (r >= 0)
                r = reload_add_hook(*ret, "sensor map", reload_sensor_map, sensors);
        if (r >= 0)
                supervisor_set_reload(s, reload_run_for_supervisor, *ret);
        return r;
}

/* The status socket: --socket, else status.sock in the runtime directory systemd made
 * (RuntimeDirectory=), else none (a daemon started by hand asks for one with --socket). A socket
 * asked for that cannot be made is an error at start, not a silent lack of status. */
static int add_status_server(Supervisor *s, const Args *args, const Config *config, Store *store, Clock *clock,
                             Sensors *sensors, Upstream *upstream, StatusServer **ret) {
        _cleanup_free_ char *path = NULL;
        const char *dir = getenv("RUNTIME_DIRECTORY");
        int r;

        if (args->socket_path)
                r = asprintf(&path, "%s", args->socket_path);
        else if (dir && dir[0] && !strchr(dir, ':'))
                r = asprintf(&path, "%s/%s", dir, STATUS_SOCKET_NAME);
        else
                return 0;
        if (r < 0) {
                path = NULL;          /* asprintf() leaves it undefined */
                return log_error_errno(-ENOMEM, "Failed to set up the status socket: %m");
        }
        r = status_server_new(supervisor_get_event(s), path, ret);
        if (r >= 0)
                r = status_sections_add(*ret, s, store, config->store.path);
        if (r >= 0)
                r = status_sections_add_clock(*ret, clock);
        if (r >= 0)
                r = status_sections_add_sensors(*ret, sensors);
        if (r >= 0 && upstream)
                r = status_sections_add_upstream(*ret, upstream);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the status socket '%s': %m", path);
        log_info("Answering `sensor-collector status` on '%s'.", path);
        return 0;
}

static int run(int argc, char **argv) {
        /* Freed in reverse: the tasks (in s) first, then the reloaded configurations they may
         * point into, then the one they were built from. */
        _cleanup_(config_freep) Config *config = NULL;
        _cleanup_(reload_freep) Reload *reload = NULL;
        _cleanup_(supervisor_freep) Supervisor *s = NULL;
        _cleanup_(status_server_freep) StatusServer *status = NULL;   /* freed before s */
        _cleanup_strv_free_ char **errors = NULL;
        Store *store = NULL;
        Clock *clock = NULL;
        Sensors *sensors = NULL;
        Upstream *upstream = NULL;
        Args args;
        int r;

        if (argc > 1 && streq(argv[1], "status"))
                return status_main(argc - 1, argv + 1);
        if (argc > 1 && streq(argv[1], "query"))
                return query_main(argc - 1, argv + 1);
        if (argc > 1 && streq(argv[1], "list-ports"))
                return list_ports_main(argc - 1, argv + 1);

        /* A SIGHUP sent while the configuration is still being read would kill the process with
         * its default action; held pending here, the supervisor's handler takes it once set up. */
        sigset_t hup;
        if (sigemptyset(&hup) < 0 || sigaddset(&hup, SIGHUP) < 0 || sigprocmask(SIG_BLOCK, &hup, NULL) < 0) {
                log_error_errno(errno, "Failed to block SIGHUP: %m");
                return EXIT_STATUS_UNEXPECTED;
        }

        r = parse_args(argc, argv, &args);
        if (r < 0)
                (void) sd_notify(false, "STOPPING=1\nSTATUS=Bad command line, exiting with status 64");
        if (r != 0)
                return r > 0 ? EXIT_STATUS_OK : EXIT_STATUS_USAGE;
        log_open(LOG_TARGET_AUTO);
        if (args.log_level >= 0)
                log_set_max_level(args.log_level);

        r = config_load(args.config_path, &config, &errors);
        if (r < 0) {
                if (!errors || !errors[0])
                        log_error_errno(r, "Failed to load '%s': %m", args.config_path);
                for (char **e = errors; e && *e; e++)
                        log_error("%s", *e);
                (void) sd_notifyf(false, "STOPPING=1\nSTATUS=%s, exiting with status %d",
                                  config_exit_status(r) == EXIT_STATUS_CONFIG ? "Invalid configuration"
                                                                              : "Could not read the configuration",
                                  config_exit_status(r));
                return config_exit_status(r);
        }
        if (args.log_level < 0)
                log_set_max_level(config->log.level);

        /* --check-config answers what a start would: nothing to collect is an error there too. */
        config->serial.enabled = config->serial.enabled && !args.no_serial;
        config->mqtt.enabled = config->mqtt.enabled && !args.no_mqtt;
        if (!config->serial.enabled && !config->mqtt.enabled) {
                log_error("Nothing to collect: both the serial and the MQTT input are disabled.");
                (void) sd_notify(false, "STOPPING=1\nSTATUS=Nothing to collect, exiting with status 64");
                return EXIT_STATUS_USAGE;
        }
        if (args.check_config) {
                printf("configuration OK\n");
                return EXIT_STATUS_OK;
        }

        r = supervisor_new(&(SupervisorOptions){ .stop_timeout_usec = config->supervisor.stop_timeout_usec,
                                                 .status_interval_usec = config->supervisor.status_interval_usec },
                           &s);
        if (r >= 0)
                r = add_tasks(s, config, &store, &clock, &sensors, &upstream);
        if (r >= 0)
                r = add_reload(s, config, &args, sensors, &reload);
        if (r < 0) {
                log_error_errno(r, "Failed to set up: %m");
                (void) sd_notify(false, "STOPPING=1");
                return EXIT_STATUS_UNEXPECTED;
        }
        if (add_status_server(s, &args, config, store, clock, sensors, upstream, &status) < 0) {
                (void) sd_notify(false, "STOPPING=1\nSTATUS=Failed to set up the status socket, exiting with status 1");
                return EXIT_STATUS_UNEXPECTED;
        }
        log_info("sensor-collector %s starting (serial %s, mqtt %s, upstream %s, store '%s').", SC_VERSION,
                 config->serial.enabled ? "on" : "off", config->mqtt.enabled ? "on" : "off",
                 config->upstream.enabled ? "on" : "off", config->store.path);
        return supervisor_run(s);
}

int main(int argc, char **argv) {
        return run(argc, argv);
}
