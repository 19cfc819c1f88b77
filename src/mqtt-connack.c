/* SPDX-License-Identifier: MIT */
/* What a broker's CONNACK refusal means for us: retry or give up, and which errno. */
#include <errno.h>
#include <mqtt_protocol.h>

/* mqtt_protocol.h names its protocol numbers with macros that collide with config.h's
 * MqttProtocol enumerators; only its reason codes are used here. */
#undef MQTT_PROTOCOL_V31
#undef MQTT_PROTOCOL_V311
#undef MQTT_PROTOCOL_V5

#include "collector/mqtt-connack.h"

bool mqtt_connack_is_fatal(MqttProtocol protocol, int rc) {
        if (protocol == MQTT_PROTOCOL_V311)
                return rc == 1 || rc == 2 || rc == 4 || rc == 5; /* 3: server unavailable, retry */
        switch (rc) {
        case MQTT_RC_MALFORMED_PACKET:
        case MQTT_RC_PROTOCOL_ERROR:
        case MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION:
        case MQTT_RC_CLIENTID_NOT_VALID:
        case MQTT_RC_BAD_USERNAME_OR_PASSWORD:
        case MQTT_RC_NOT_AUTHORIZED:
        case MQTT_RC_BANNED:
        case MQTT_RC_BAD_AUTHENTICATION_METHOD:
        case MQTT_RC_TOPIC_NAME_INVALID:
        case MQTT_RC_PACKET_TOO_LARGE:
        case MQTT_RC_PAYLOAD_FORMAT_INVALID:
        case MQTT_RC_RETAIN_NOT_SUPPORTED:
        case MQTT_RC_QOS_NOT_SUPPORTED:
                return true;
        default:
                return false; /* unspecified, server unavailable/busy, quota, rate, moved: retry */
        }
}

int mqtt_connack_errno(MqttProtocol protocol, int rc) {
        if (protocol == MQTT_PROTOCOL_V311)
                switch (rc) {
                case 1:
                        return -EPROTONOSUPPORT;
                case 2:
                        return -EINVAL;
                case 3:
                        return -ECONNREFUSED;
                default:
                        return -EACCES;
                }
        switch (rc) {
        case MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION:
                return -EPROTONOSUPPORT;
        case MQTT_RC_CLIENTID_NOT_VALID:
                return -EINVAL;
        case MQTT_RC_BAD_USERNAME_OR_PASSWORD:
        case MQTT_RC_NOT_AUTHORIZED:
        case MQTT_RC_BANNED:
        case MQTT_RC_BAD_AUTHENTICATION_METHOD:
                return -EACCES;
        case MQTT_RC_SERVER_UNAVAILABLE:
        case MQTT_RC_SERVER_BUSY:
                return -ECONNREFUSED;
        default:
                return -EPROTO;
        }
}

