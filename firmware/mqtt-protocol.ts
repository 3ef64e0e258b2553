// MQTT 3.1.1 for the meter's client (firmware/mqtt.ts): the control packet types, flags, return
// codes and limits, and the two-byte integers, that the packet builders (mqtt-encode.ts) and the
// parsers and framer (mqtt-decode.ts) share. Pure: no I/O, no timers, testable in the VM.
// Clauses cited are from OASIS MQTT Version 3.1.1 (docs.oasis-open.org/mqtt/mqtt/v3.1.1/os).

/** Control packet types, fixed header bits 7-4 [MQTT-2.2.1]. */
export const enum PacketType {
    CONNECT = 1,
    CONNACK = 2,
    PUBLISH = 3,
    PUBACK = 4,
    SUBSCRIBE = 8,
    SUBACK = 9,
    PINGREQ = 12,
    PINGRESP = 13,
    DISCONNECT = 14,
}

/** Fixed header byte 1 [MQTT-2.2]: the packet type in bits 7-4, its flags in bits 3-0. */
export const enum HeaderBits {
    TYPE_SHIFT = 4,
    FLAGS_MASK = 0x0f,
}

/**
 * Remaining length [MQTT-2.2.3]: base-128 digits, least significant first, bit 7 set on every
 * digit but the last.
 */
export const enum LengthDigit {
    VALUE_MASK = 0x7f,
    CONTINUE = 0x80,
}
export const LENGTH_DIGIT_BASE = 128

/** QoS levels [MQTT-4.3]. The meter publishes and subscribes at AT_LEAST_ONCE. */
export const enum QoS {
    AT_MOST_ONCE = 0,
    AT_LEAST_ONCE = 1,
    EXACTLY_ONCE = 2,
    /** Both QoS bits set: a malformed PUBLISH [MQTT-3.3.1-4]. */
    MALFORMED = 3,
}

/** CONNECT flags byte [MQTT-3.1.2.3]. */
export const enum ConnectFlag {
    /** 3.1.2.4 Clean Session: the meter keeps its own queue, the broker keeps nothing. */
    CLEAN_SESSION = 0x02,
    /** 3.1.2.5 Will Flag. */
    WILL = 0x04,
    /** 3.1.2.6 Will QoS, bits 4-3 (the QoS shifted by WILL_QOS_SHIFT). */
    WILL_QOS = 0x18,
    /** 3.1.2.7 Will Retain. */
    WILL_RETAIN = 0x20,
    /** 3.1.2.9 Password Flag. */
    PASSWORD = 0x40,
    /** 3.1.2.8 User Name Flag. */
    USERNAME = 0x80,
}

/** PUBLISH fixed header flags [MQTT-3.3.1]. */
export const enum PublishFlag {
    /** 3.3.1.3 RETAIN. */
    RETAIN = 0x01,
    /** 3.3.1.2 QoS level, bits 2-1 (the QoS shifted by PUBLISH_QOS_SHIFT). */
    QOS = 0x06,
    /** 3.3.1.1 DUP. */
    DUP = 0x08,
}

export const WILL_QOS_SHIFT = 3
export const PUBLISH_QOS_SHIFT = 1

/** 3.8.1: bits 3-0 of SUBSCRIBE's fixed header are 0010 [MQTT-3.8.1-1]. */
export const SUBSCRIBE_FLAGS = 0x02
/** CONNACK acknowledge flags [MQTT-3.2.2.1]. */
export const enum ConnackFlag {
    /** 3.2.2.2 Session Present (the meter always asks for a clean session). */
    SESSION_PRESENT = 0x01,
}

/** CONNACK return codes [MQTT-3.2.2.3]. */
export const enum ConnectReturnCode {
    ACCEPTED = 0,
    UNACCEPTABLE_PROTOCOL_VERSION = 1,
    IDENTIFIER_REJECTED = 2,
    SERVER_UNAVAILABLE = 3,
    BAD_USER_NAME_OR_PASSWORD = 4,
    NOT_AUTHORIZED = 5,
}

/** 3.9.3: a SUBACK return code of 0x80 is a refused subscription. */
export const SUBACK_FAILURE = 0x80
/** 3.1.2.2: protocol level 4 is MQTT 3.1.1. */
export const PROTOCOL_LEVEL = 4
/** 2.2.3: the remaining length takes at most four bytes (256 MB). */
export const MAX_LENGTH_BYTES = 4
/** 3.4.1: a PUBACK's remaining length: its packet identifier. */
export const PUBACK_LENGTH = 2
/** Bytes of one PUBACK: the fixed header's two and the packet identifier. */
export const PUBACK_BYTES = 2 + PUBACK_LENGTH

/** Two-byte big-endian integer [MQTT-1.5.2] (the VM's getAt/setAt are little-endian). */
export function getU16(b: Buffer, off: number): number {
    return b.getAt(off, "u8") * 256 + b.getAt(off + 1, "u8")
}
export function setU16(b: Buffer, off: number, v: number) {
    b.setAt(off, "u8", (v >> 8) & 0xff)
    b.setAt(off + 1, "u8", v & 0xff)
}
