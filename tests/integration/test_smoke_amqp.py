import pika


def test_publish_get_with_pika(mqemu_server):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", mqemu_server.ports["amqp"]))
    try:
        ch = conn.channel()
        ch.queue_declare("smoke")
        ch.basic_publish("", "smoke", b"hi", pika.BasicProperties(content_type="text/plain"))
        method, props, body = ch.basic_get("smoke", auto_ack=True)
        assert body == b"hi"
        assert props.content_type == "text/plain"
        assert method.message_count == 0
    finally:
        conn.close()


async def test_trio_fixture_reports_ports(mqemu_node):
    assert set(mqemu_node.ports) >= {"amqp"}
    assert all(p > 0 for p in mqemu_node.ports.values())
