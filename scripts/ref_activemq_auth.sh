#!/usr/bin/env bash
# An ActiveMQ 5.17 with the simpleAuthenticationPlugin and the authorizationPlugin, for
# tests/differential/test_auth_differential.py (the users and entries below are the ones of
# that test's CONFIG: keep them equal). Uses the Debian package the shared reference brokers
# use, on its own ports and folder, so it never touches them.
#   scripts/ref_activemq_auth.sh start   # writes $DIR/env: MQEMU_REF_ACTIVEMQ_AUTH_STOMP/_MQTT
#   scripts/ref_activemq_auth.sh stop
set -euo pipefail
DIR=${MQEMU_REF_AUTH_DIR:-${TMPDIR:-/tmp}/mqemu-ref-auth}
STOMP=${MQEMU_REF_AUTH_STOMP_PORT:-61691} MQTT=${MQEMU_REF_AUTH_MQTT_PORT:-1991}
OPENWIRE=${MQEMU_REF_AUTH_OPENWIRE_PORT:-61696}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
case ${1:-start} in
stop)
  [[ -f $DIR/pid ]] && kill "$(cat "$DIR/pid")" 2>/dev/null || true
  rm -f "$DIR/pid" "$DIR/env"; exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
mkdir -p "$DIR/conf" "$DIR/data" "$DIR/tmp" "$DIR/lib"
for j in mqtt-client hawtdispatch hawtdispatch-transport; do  # Debian lacks them on the class path
  [ -f "/usr/share/java/$j.jar" ] && ln -sf "/usr/share/java/$j.jar" "$DIR/lib/$j.jar"
done
cat > "$DIR/conf/activemq.xml" <<CONF
<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="mqemu-ref-auth"
          dataDirectory="$DIR/data" persistent="false">
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="false">
        <users>
          <authenticationUser username="admin" password="adminpw" groups="admins,users"/>
          <authenticationUser username="app" password="apppw" groups="users"/>
          <authenticationUser username="reader" password="readerpw" groups="readers"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin>
        <map>
          <authorizationMap>
            <authorizationEntries>
              <authorizationEntry queue=">" read="admins" write="admins" admin="admins"/>
              <authorizationEntry queue="orders.>" read="users" write="users" admin="users"/>
              <authorizationEntry queue="reports" read="readers"/>
              <authorizationEntry queue="inbox.>" read="users" write="users"/>
              <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
              <authorizationEntry topic="news.>" read="users,readers" write="users" admin="users,readers"/>
              <authorizationEntry topic="ActiveMQ.Advisory.>" read="*" write="*" admin="*"/>
            </authorizationEntries>
          </authorizationMap>
        </map>
      </authorizationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://127.0.0.1:$OPENWIRE"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:$STOMP"/>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:$MQTT"/>
    </transportConnectors>
  </broker>
</beans>
CONF
if ! { [[ -f $DIR/pid ]] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; }; then
  setsid nohup java -Xms64M -Xmx256M -Dactivemq.base="$DIR" -Dactivemq.home=/usr/share/activemq \
    -Dactivemq.conf="$DIR/conf" -Dactivemq.data="$DIR/data" -Djava.io.tmpdir="$DIR/tmp" \
    -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$DIR/conf/activemq.xml" > "$DIR/out.log" 2>&1 &
  echo $! > "$DIR/pid"
fi
for _ in $(seq 120); do port_open "$STOMP" && port_open "$MQTT" && break; sleep 1; done
port_open "$STOMP" || { echo "ActiveMQ did not open $STOMP; see $DIR/out.log" >&2; exit 1; }
printf 'export MQEMU_REF_ACTIVEMQ_AUTH_STOMP=127.0.0.1:%s\nexport MQEMU_REF_ACTIVEMQ_AUTH_MQTT=127.0.0.1:%s\n' \
  "$STOMP" "$MQTT" > "$DIR/env"
cat "$DIR/env"
