#!/bin/bash
KAFKA_RUN_SERVER=1 exec "$(dirname "$0")/kafka-run-class.sh" kafka.Kafka "$@"
