"""Golden MQTT byte vectors shared by the codec tests.

Each entry is (name, protocol level, wire bytes, packet).  The bytes were
worked out by hand from the MQTT 3.1.1 / 5.0 specifications, not produced by
the encoder under test.
"""

from __future__ import annotations

from mqemu.protocols.mqtt.packets import (
    Auth, Connack, Connect, Disconnect, Pingreq, Pingresp, Puback, Pubcomp, Publish,
    Pubrec, Pubrel, Suback, Subscribe, Subscription, Unsuback, Unsubscribe, Will,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


CONNECT_31 = ("connect-3.1", 3, h("10 10 0006 4d5149736470 03 02 000a 0002 6331"),
              Connect("MQIsdp", 3, True, 10, "c1"))
CONNECT_311 = (
    "connect-3.1.1-will-user-pass", 4,
    # flags 0xEE = user | password | will retain | will QoS 1 | will | clean session
    h("10 1f 0004 4d515454 04 ee 003c 0003 636964 0003 772f74 0003 627965 0001 75 0001 70"),
    Connect("MQTT", 4, True, 60, "cid", Will("w/t", b"bye", 1, True), "u", b"p"),
)
CONNECT_5 = (
    "connect-5.0-will-properties", 5,
    h("10 2c 0004 4d515454 05 8e 003c"
      " 08 11 0000000a 21 0014"                      # session expiry 10, receive max 20
      " 0001 78"                                     # client id "x"
      " 0c 18 00000005 26 0001 6b 0001 76"           # will delay 5, user property k=v
      " 0001 74 0001 70"                             # will topic "t", payload "p"
      " 0001 75"),                                   # user name "u"
    Connect("MQTT", 5, True, 60, "x",
            Will("t", b"p", 1, False,
                 {"will_delay_interval": 5, "user_property": [("k", "v")]}),
            "u", None, {"session_expiry_interval": 10, "receive_maximum": 20}),
)

# Packets that follow a CONNECT, per protocol level.
AFTER_CONNECT = [
    ("connack-3.1.1", 4, h("20 02 01 00"), Connack(True, 0)),
    ("connack-3.1.1-refused", 4, h("20 02 00 05"), Connack(False, 5)),
    ("connack-5.0", 5, h("20 0b 00 00 08 12 0002 6162 22 000a"),
     Connack(False, 0, {"assigned_client_identifier": "ab", "topic_alias_maximum": 10})),
    ("publish-qos0-3.1.1", 4, h("30 07 0003 612f62 6869"), Publish("a/b", b"hi")),
    ("publish-qos1-retain-3.1.1", 4, h("33 09 0003 612f62 000a 6869"),
     Publish("a/b", b"hi", 1, True, False, 10)),
    ("publish-qos1-3.1", 3, h("32 09 0003 612f62 000a 6869"),
     Publish("a/b", b"hi", 1, False, False, 10)),
    ("publish-qos0-5.0", 5, h("30 08 0003 612f62 00 6869"), Publish("a/b", b"hi")),
    ("publish-qos2-dup-5.0-props", 5,
     h("3c 1e 0003 612f62 1234 14 01 01 02 0000003c 03 0003 742f70 26 0001 61 0001 62 6869"),
     Publish("a/b", b"hi", 2, False, True, 0x1234,
             {"payload_format_indicator": 1, "message_expiry_interval": 60,
              "content_type": "t/p", "user_property": [("a", "b")]})),
    ("publish-qos1-5.0-subids", 5, h("32 0e 0003 612f62 0001 04 0b 01 0b 05 6869"),
     Publish("a/b", b"hi", 1, False, False, 1, {"subscription_identifier": [1, 5]})),
    ("puback-3.1.1", 4, h("40 02 0005"), Puback(5)),
    ("puback-5.0-short", 5, h("40 02 0005"), Puback(5)),
    ("puback-5.0-rc", 5, h("40 03 0005 10"), Puback(5, 0x10)),
    ("pubrec-5.0-props", 5, h("50 08 0005 80 04 1f 0001 78"),
     Pubrec(5, 0x80, {"reason_string": "x"})),
    ("pubrel-3.1.1", 4, h("62 02 0005"), Pubrel(5)),
    ("pubrel-5.0-rc", 5, h("62 03 0005 92"), Pubrel(5, 0x92)),
    ("pubcomp-3.1.1", 4, h("70 02 0005"), Pubcomp(5)),
    ("subscribe-3.1.1", 4, h("82 0c 0001 0003 612f23 01 0001 62 02"),
     Subscribe(1, (Subscription("a/#", 1), Subscription("b", 2)))),
    ("subscribe-5.0-options", 5, h("82 10 0002 03 0b ac02 0003 612f2b 2d 0001 63 10"),
     Subscribe(2, (Subscription("a/+", 1, True, True, 2), Subscription("c", 0, False, False, 1)),
               {"subscription_identifier": 300})),
    ("suback-3.1.1", 4, h("90 04 0001 01 80"), Suback(1, (1, 0x80))),
    ("suback-5.0", 5, h("90 0b 0002 05 1f 0002 6e6f 01 00 a2"),
     Suback(2, (1, 0, 0xA2), {"reason_string": "no"})),
    ("unsubscribe-3.1.1", 4, h("a2 05 0003 0001 61"), Unsubscribe(3, ("a",))),
    ("unsubscribe-5.0", 5, h("a2 09 0003 00 0001 61 0001 62"), Unsubscribe(3, ("a", "b"))),
    ("unsuback-3.1.1", 4, h("b0 02 0003"), Unsuback(3)),
    ("unsuback-5.0", 5, h("b0 05 0003 00 00 11"), Unsuback(3, (0, 0x11))),
    ("pingreq", 4, h("c0 00"), Pingreq()),
    ("pingresp", 5, h("d0 00"), Pingresp()),
    ("disconnect-3.1.1", 4, h("e0 00"), Disconnect()),
    ("disconnect-5.0-plain", 5, h("e0 00"), Disconnect()),
    ("disconnect-5.0-will", 5, h("e0 01 04"), Disconnect(4)),
    ("disconnect-5.0-reason", 5, h("e0 08 8b 06 1f 0003 627965"),
     Disconnect(0x8B, {"reason_string": "bye"})),
    ("auth-5.0", 5, h("f0 06 18 04 15 0001 6d"),
     Auth(0x18, {"authentication_method": "m"})),
]

CONNECTS = {3: CONNECT_31, 4: CONNECT_311, 5: CONNECT_5}
ALL = [CONNECT_31, CONNECT_311, CONNECT_5] + AFTER_CONNECT
