#!/bin/bash
# kafka-run-class.sh CLASS ARGS... — as in the Kafka distribution, reduced to what this image needs.
set -e
KAFKA_HOME=/opt/kafka
if [ "${KAFKA_RUN_SERVER:-}" = 1 ]; then
  log4j="$KAFKA_HOME/config/log4j2.xml"
  # shellcheck disable=SC2086
  exec java ${KAFKA_HEAP_OPTS:--Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$log4j" ${KAFKA_OPTS:-} -cp "$KAFKA_HOME/libs/*" "$@"
fi
exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$KAFKA_HOME/config/tools-log4j2.xml" -cp "$KAFKA_HOME/libs/*" "$@"
