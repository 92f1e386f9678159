"""ActiveMQ's console surfaces on an ActiveMQ-engine node, over real HTTP (httpx) and
STOMP (stomp.py): the REST message API, the Jolokia subset and the /admin/xml pages."""

import threading
import xml.etree.ElementTree as ET

import httpx
import pytest
import stomp
from stomp_inbox import Collect

from mqemu.broker.auth import User
from mqemu.broker.config import BrokerConfig

pytestmark = pytest.mark.timeout(30)

BROKER = "org.apache.activemq:type=Broker,brokerName=localhost"


def queue_mbean(name):
    return f"{BROKER},destinationType=Queue,destinationName={name}"


@pytest.fixture
def node(mqemu_start):
    return mqemu_start(config=BrokerConfig(engine="activemq"), ports={"http": 0})


@pytest.fixture
def console(node):
    with httpx.Client(base_url=f"http://127.0.0.1:{node.ports['http']}", auth=("admin", "admin"),
                      timeout=10) as client:
        yield client


def stomp_client(node):
    conn = stomp.Connection12([("127.0.0.1", node.ports["stomp"])])
    listener = Collect()
    conn.set_listener("", listener)
    conn.connect(wait=True)
    return conn, listener


def read(console, mbean, attribute=None):
    path = f"/api/jolokia/read/{mbean}" + (f"/{attribute}" if attribute else "")
    return console.get(path).json()


def test_console_needs_a_login(node):
    base = f"http://127.0.0.1:{node.ports['http']}"
    r = httpx.get(f"{base}/admin/xml/queues.jsp", timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'basic realm="ActiveMQRealm"'
    assert httpx.get(f"{base}/api/message/q?type=queue", auth=("admin", "wrong"), timeout=10).status_code == 401
    assert httpx.get(f"{base}/admin/xml/queues.jsp", auth=("admin", "admin"), timeout=10).status_code == 200


def test_console_logins_are_the_nodes_users_when_it_has_users(mqemu_start):
    config = BrokerConfig(engine="activemq")
    node = mqemu_start(config=config, ports={"http": 0})
    node.broker.auth.users["ops"] = User("ops", "s3cret", ())
    node.broker.auth.users_configured = True
    base = f"http://127.0.0.1:{node.ports['http']}"
    assert httpx.get(f"{base}/admin/xml/queues.jsp", auth=("admin", "admin"), timeout=10).status_code == 401
    assert httpx.get(f"{base}/admin/xml/queues.jsp", auth=("ops", "s3cret"), timeout=10).status_code == 200


def test_rest_send_reaches_a_stomp_consumer_with_its_properties(node, console):
    conn, listener = stomp_client(node)
    try:
        conn.subscribe("/queue/orders", id="s1", ack="auto", headers={"receipt": "sub"})
        listener.wait(lambda: "sub" in listener.receipts)
        r = console.post("/api/message/orders?type=queue", data={"body": "hello", "color": "red",
                                                                 "JMSCorrelationID": "c-1", "JMSPriority": "7",
                                                                 "JMSReplyTo": "queue://answers"})
        assert r.status_code == 200 and r.text == "Message sent" and r.headers["messageID"].startswith("ID:")
        listener.wait(lambda: listener.messages)
        frame = listener.messages[0]
        assert frame.body == "hello"
        assert frame.headers["color"] == "red" and frame.headers["correlation-id"] == "c-1"
        assert frame.headers["priority"] == "7" and frame.headers["persistent"] == "true"
        assert frame.headers["reply-to"] == "/queue/answers"
    finally:
        conn.disconnect()


def test_rest_get_consumes_one_message_then_204(console):
    # the body of a POST is read line by line, each line ending with a newline (MessageServlet)
    r = console.post("/api/message?destination=queue://jobs", content=b"<job id='1'/>",
                     headers={"content-type": "text/xml"})
    assert r.status_code == 200
    console.post("/api/message/jobs?type=queue", data={"body": "two", "JMSDeliveryMode": "non-persistent"})
    r = console.get("/api/message/jobs?type=queue")
    assert r.status_code == 200 and r.text == "<job id='1'/>\n"
    assert r.headers["content-type"].startswith("application/xml")
    assert r.headers["destination"] == "queue://jobs" and r.headers["id"].startswith("ID:")
    r = console.delete("/api/message?destination=queue://jobs&readTimeout=100")
    assert r.status_code == 200 and r.text == "two" and r.headers["content-type"].startswith("text/plain")
    assert console.get("/api/message?destination=queue://jobs&readTimeout=200").status_code == 204


def test_rest_get_waits_for_a_message_up_to_read_timeout(node, console):
    conn, listener = stomp_client(node)
    try:
        answers = []
        reader = threading.Thread(target=lambda: answers.append(
            console.get("/api/message/late?type=queue&readTimeout=10000")))
        reader.start()
        # the queue exists once the GET has begun to wait on it
        for _ in range(500):
            if "late" in node.broker.vhosts["/"].queues:
                break
            threading.Event().wait(0.01)
        conn.send("/queue/late", "arrived", headers={"receipt": "sent"})
        listener.wait(lambda: "sent" in listener.receipts)
        reader.join(timeout=15)
        assert answers and answers[0].status_code == 200 and answers[0].text == "arrived"
    finally:
        conn.disconnect()


def test_rest_topic_subscription_of_a_client_id(console):
    # the first GET of clientId subscribes; a send after it is kept for the next GET
    assert console.get("/api/message/news?clientId=c1").status_code == 204  # topic: the default type
    console.post("/api/message/news", data={"body": "extra"})
    r = console.get("/api/message?destination=topic://news&clientId=c1&oneShot=true")
    assert r.status_code == 200 and r.text == "extra" and r.headers["destination"] == "topic://news"
    console.post("/api/message/news", data={"body": "after one shot"})
    assert console.get("/api/message/news?clientId=c1").status_code == 204


def test_no_destination_is_an_error(console):
    assert console.post("/api/message", data={"body": "x"}).status_code == 500


def test_jolokia_broker_and_queue_attributes(node, console):
    conn, listener = stomp_client(node)
    try:
        conn.subscribe("/queue/busy", id="s1", ack="client", headers={"receipt": "sub"})
        conn.subscribe("/topic/prices", id="s2", ack="auto", headers={"receipt": "sub2"})
        listener.wait(lambda: {"sub", "sub2"} <= listener.receipts)
        for i in range(3):
            console.post("/api/message/depth?type=queue", data={"body": str(i)})
        got = read(console, BROKER, "BrokerName")
        assert got["status"] == 200 and got["value"] == "localhost"
        assert set(got) == {"request", "value", "timestamp", "status"}
        assert got["request"] == {"type": "read", "mbean": BROKER, "attribute": "BrokerName"}
        assert read(console, BROKER, "BrokerVersion")["value"].startswith("5.")
        assert read(console, BROKER, "TotalMessageCount")["value"] == 3
        assert read(console, BROKER, "TotalConsumerCount")["value"] == 2
        queues = {q["objectName"] for q in read(console, BROKER, "Queues")["value"]}
        assert queues == {"org.apache.activemq:brokerName=localhost,destinationName=busy,destinationType=Queue,"
                          "type=Broker", "org.apache.activemq:brokerName=localhost,destinationName=depth,"
                          "destinationType=Queue,type=Broker"}
        topics = [t["objectName"] for t in read(console, BROKER, "Topics")["value"]]
        assert any("destinationName=prices" in t for t in topics)
        q = read(console, queue_mbean("depth"))["value"]
        assert (q["QueueSize"], q["ConsumerCount"], q["EnqueueCount"], q["DequeueCount"]) == (3, 0, 3, 0)
        assert read(console, queue_mbean("busy"), "ConsumerCount")["value"] == 1
        topic = read(console, f"{BROKER},destinationType=Topic,destinationName=prices", "ConsumerCount")
        assert topic["value"] == 1
        both = console.post("/api/jolokia", json={"type": "read", "mbean": queue_mbean("depth"),
                                                  "attribute": ["QueueSize", "ConsumerCount"]}).json()
        assert both["value"] == {"QueueSize": 3, "ConsumerCount": 0}
        pattern = read(console, f"{BROKER},destinationType=Queue,destinationName=*", "QueueSize")["value"]
        assert pattern == {"org.apache.activemq:brokerName=localhost,destinationName=busy,destinationType=Queue,"
                           "type=Broker": 0, "org.apache.activemq:brokerName=localhost,destinationName=depth,"
                           "destinationType=Queue,type=Broker": 3}
    finally:
        conn.disconnect()


def test_jolokia_exec_add_purge_remove(node, console):
    add = {"type": "exec", "mbean": BROKER, "operation": "addQueue(java.lang.String)", "arguments": ["made"]}
    got = console.post("/api/jolokia", json=add).json()
    assert got["status"] == 200 and got["value"] is None and "made" in node.broker.vhosts["/"].queues
    for i in range(2):
        console.post("/api/message/made?type=queue", data={"body": str(i)})
    assert read(console, queue_mbean("made"), "QueueSize")["value"] == 2
    got = console.get(f"/api/jolokia/exec/{queue_mbean('made')}/purge()").json()
    assert got["status"] == 200
    assert read(console, queue_mbean("made"), "QueueSize")["value"] == 0
    got = console.post("/api/jolokia", json=[{"type": "exec", "mbean": BROKER, "operation": "removeQueue",
                                              "arguments": ["made"]}]).json()
    assert got[0]["status"] == 200 and "made" not in node.broker.vhosts["/"].queues


def test_jolokia_errors_are_in_the_body(console):
    got = read(console, queue_mbean("absent"), "QueueSize")
    assert got["status"] == 404 and got["error_type"] == "javax.management.InstanceNotFoundException"
    assert console.get(f"/api/jolokia/read/{queue_mbean('absent')}/QueueSize").status_code == 200
    got = read(console, BROKER, "NoSuchThing")
    assert got["status"] == 404 and got["error_type"] == "javax.management.AttributeNotFoundException"
    got = console.post("/api/jolokia", json={"type": "write", "mbean": BROKER, "attribute": "x", "value": 1}).json()
    assert got["status"] == 403
    got = console.get(f"/api/jolokia/read/{BROKER}/BrokerName", headers={"Origin": "http://evil.example"}).json()
    assert got["status"] == 403 and "Origin http://evil.example is not allowed" in got["error"]
    host = console.base_url.netloc.decode()
    ok = console.get(f"/api/jolokia/read/{BROKER}/BrokerName", headers={"Origin": f"http://{host}"}).json()
    assert ok["status"] == 200


def test_admin_xml_pages(node, console):
    conn, listener = stomp_client(node)
    try:
        conn.disconnect()
        conn = stomp.Connection12([("127.0.0.1", node.ports["stomp"])])
        conn.set_listener("", listener)
        conn.connect(wait=True, headers={"client-id": "app1"})
        conn.subscribe("/topic/alerts", id="d1", ack="auto",
                       headers={"activemq.subscriptionName": "audit", "receipt": "dsub"})
        conn.subscribe("/queue/work", id="q1", ack="client", headers={"receipt": "qsub"})
        listener.wait(lambda: {"dsub", "qsub"} <= listener.receipts)
        console.post("/api/message/idle?type=queue", data={"body": "x"})
        queues = ET.fromstring(console.get("/admin/xml/queues.jsp").text)
        stats = {q.get("name"): q.find("stats").attrib for q in queues.findall("queue")}
        assert stats == {"idle": {"size": "1", "consumerCount": "0", "enqueueCount": "1", "dequeueCount": "0"},
                         "work": {"size": "0", "consumerCount": "1", "enqueueCount": "0", "dequeueCount": "0"}}
        topics = ET.fromstring(console.get("/admin/xml/topics.jsp").text)
        alerts = [t for t in topics.findall("topic") if t.get("name") == "alerts"]
        assert alerts and alerts[0].find("stats").get("consumerCount") == "1"
        subs = ET.fromstring(console.get("/admin/xml/subscribers.jsp").text).findall("subscriber")
        assert [(s.get("clientId"), s.get("subscriptionName"), s.get("destinationName"), s.get("active"))
                for s in subs] == [("app1", "audit", "alerts", "yes")]
    finally:
        conn.disconnect()
