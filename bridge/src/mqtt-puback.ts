// The one place the bridge reaches into mqtt.js's internals. mqtt.js 5 acknowledges a QoS 1
// PUBLISH (PUBACK) when handleMessage's callback succeeds, and reads the next packet only after
// that callback; it has no public call that sends a PUBACK later. customHandleAcks chooses the
// reason code but still acknowledges at the callback, and waiting to call back would stop the
// reading. So the bridge calls back with an error (mqtt.js then sends no PUBACK and reads on) and
// sends the PUBACK itself after the frame's batch commits (deferredPubacks in bridge.ts), through
// the private method mqtt.js's own publish handler uses (handlers/publish.js).
// tests/system/mqtt-puback.test.ts fails when an mqtt.js upgrade changes either behaviour.
import type { MqttClient } from "mqtt"

interface PacketWriter {
  _sendPacket(packet: { cmd: "puback"; messageId: number }): void
}

/** Sends the PUBACK of `messageId` on the client's connection, as mqtt.js's publish handler does. */
export function sendPuback(client: MqttClient, messageId: number): void {
  ;(client as unknown as PacketWriter)._sendPacket({ cmd: "puback", messageId })
}
