#!/usr/bin/env bash
# Start, stop or query a single-node Apache Cassandra 5.0 for the ScyllaDB store's tests.
#
#   scripts/cassandra.sh start|stop|status
#
# ScyllaDB is not installable here; Cassandra 5.0 speaks the same CQL protocol (v4) and the
# store's schema is portable (docs/storage.md). The server and its dependencies come from Maven
# Central (tools/cassandra/pom.xml); no Docker, no tarball. Everything lives under the git-ignored
# target/cassandra/: lib-<version>/ (the classpath, fetched once), node/ (data and logs, wiped at
# every start unless CASSANDRA_KEEP_DATA=1), cassandra.pid.
#
# Environment overrides (defaults in brackets):
#   CASSANDRA_VERSION [5.0.8]        CASSANDRA_CQL_PORT [9042]     CASSANDRA_STORAGE_PORT [7000]
#   CASSANDRA_HEAP [1G]              CASSANDRA_START_TIMEOUT [180] (seconds)
#   CASSANDRA_STATE_DIR [target/cassandra]
#   CASSANDRA_KEEP_DATA [0]          1: start on the data node/ already holds (a restart after
#                                    `stop`, as the fault tests do) instead of wiping it
#   CASSANDRA_MAVEN_REPO             a Maven local repository (-Dmaven.repo.local), e.g. target/m2
#   JAVA17                           path of a Java 17 `java` (Cassandra 5.0 runs on 11 or 17 only)
#
# Java 17 and Maven are installed with apt-get when missing and running as root (CI machines).
#
# The log of the node is target/cassandra/node/logs/stdout.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF_DIR="$ROOT/tools/cassandra"
VERSION="${CASSANDRA_VERSION:-5.0.8}"
STATE="${CASSANDRA_STATE_DIR:-$ROOT/target/cassandra}"
LIB="$STATE/lib-$VERSION"
NODE="$STATE/node"
PIDFILE="$STATE/cassandra.pid"
CQL_PORT="${CASSANDRA_CQL_PORT:-9042}"
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-7000}"
HEAP="${CASSANDRA_HEAP:-1G}"
START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-180}"

say() { echo "cassandra.sh: $*"; }
die() { echo "cassandra.sh: $*" >&2; exit 1; }

# Java 17 and Maven are Debian packages; a fresh machine (CI) gets them here, once.
ensure_tools() {
  if command -v mvn >/dev/null && find_java17 >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Java 17 and Maven (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openjdk-17-jre-headless maven >/dev/null
  else
    die "Java 17 and Maven are needed: install openjdk-17-jre-headless and maven"
  fi
}

find_java17() {
  local candidate
  for candidate in "${JAVA17:-}" "$(command -v java || true)" \
      $(update-alternatives --list java 2>/dev/null || true) /usr/lib/jvm/*17*/bin/java; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" -version 2>&1 | head -n1 | grep -q '"17\.'; then echo "$candidate"; return 0; fi
  done
  echo "cassandra.sh: no Java 17 found (Cassandra 5.0 runs on Java 11 or 17 only): install openjdk-17-jre-headless or set JAVA17" >&2
  return 1
}

fetch_classpath() {
  [ -f "$LIB/.complete" ] && return 0
  command -v mvn >/dev/null || die "mvn not found: install maven (apt-get install maven)"
  say "fetching Cassandra $VERSION and its dependencies from Maven Central into $LIB"
  rm -rf "$LIB"; mkdir -p "$LIB"
  local repo=()
  [ -n "${CASSANDRA_MAVEN_REPO:-}" ] && repo=("-Dmaven.repo.local=$CASSANDRA_MAVEN_REPO")
  # Maven 3.8's default dependency plugin is ancient: pin a current one.
  mvn -B -q "${repo[@]}" -f "$CONF_DIR/pom.xml" -Dcassandra.version="$VERSION" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIB"
  ls "$LIB/cassandra-all-$VERSION.jar" "$LIB"/jamm-*.jar >/dev/null
  touch "$LIB/.complete"
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

cql_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$CQL_PORT") 2>/dev/null; }

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill "$pid"                       # SIGTERM: Cassandra's shutdown hook drains
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped (pid $pid)"
  else
    say "not running"
  fi
  rm -f "$PIDFILE"
}

wait_ready() {
  local pid="$1" started="$2"
  local deadline=$((started + START_TIMEOUT))
  # The native transport is the last thing Cassandra starts ("Startup complete" follows it), so
  # an accepting CQL port means clients can connect.
  until cql_port_open; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 60 "$NODE/logs/stdout.log" >&2
      rm -f "$PIDFILE"
      die "Cassandra exited during startup; the log is $NODE/logs/stdout.log"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 60 "$NODE/logs/stdout.log" >&2
      stop
      die "port $CQL_PORT not open after ${START_TIMEOUT}s; the log is $NODE/logs/stdout.log"
    fi
    sleep 1
  done
}

start() {
  local pid java jamm started
  if pid="$(running_pid)"; then
    say "already running (pid $pid) on 127.0.0.1:$CQL_PORT"
    return 0
  fi
  if cql_port_open; then
    die "port $CQL_PORT is already in use by another process; stop it or set CASSANDRA_CQL_PORT"
  fi
  ensure_tools
  java="$(find_java17)"
  started=$SECONDS
  fetch_classpath
  local fetched=$((SECONDS - started))
  started=$SECONDS
  if [ "${CASSANDRA_KEEP_DATA:-0}" = 1 ] && [ -d "$NODE/data" ]; then
    say "keeping the data in $NODE (CASSANDRA_KEEP_DATA=1)"
  else
    rm -rf "$NODE"
  fi
  mkdir -p "$NODE"/{data,commitlog,saved_caches,hints,cdc_raw,logs,triggers,tmp}
  sed -e "s|@NODE@|$NODE|g" -e "s|@CQL_PORT@|$CQL_PORT|g" -e "s|@STORAGE_PORT@|$STORAGE_PORT|g" \
    "$CONF_DIR/cassandra.yaml.in" > "$NODE/cassandra.yaml"
  jamm="$(ls "$LIB"/jamm-*.jar | head -n1)"
  # The flags are those of Cassandra 5.0's conf/jvm17-server.options (JPMS opens and exports the
  # server needs on Java 17, -Djava.security.manager=allow) plus what bin/cassandra sets. The
  # researched command line started as is on the first run here (Debian OpenJDK 17.0.15,
  # Cassandra 5.0.8: ~14 s to CQL on 2 cores). Changes from that recipe, and why:
  # - the seed names the storage port (127.0.0.1:@STORAGE_PORT@), else CASSANDRA_STORAGE_PORT
  #   would leave the node seeding itself on 7000;
  # - -Dcassandra.ring_delay_ms=0 (single node: nothing to wait for);
  # - no -Dcassandra.jmx.local.port: no JMX listener, no port 7199 to collide on;
  # - cassandra.yaml.in raises batch_size_*_threshold and the request timeouts (see there);
  # - start refuses a foreign process on the CQL port instead of killing it, and is a no-op
  #   when our node already runs; setsid keeps a Ctrl-C of the caller from killing the node.
  # Found by the tests, not the script: Cassandra 5.0 in its default storage_compatibility_mode
  # refuses TTLs that end after 2038-01-19 (the store caps its TTLs).
  setsid "$java" \
    -Xms"$HEAP" -Xmx"$HEAP" -Xss256k -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
    -XX:+UseTLAB -XX:+ResizeTLAB -XX:+PerfDisableSharedMem \
    -javaagent:"$jamm" \
    -Djava.security.manager=allow \
    -Djdk.attach.allowAttachSelf=true \
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
    --add-exports java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-exports java.base/sun.nio.ch=ALL-UNNAMED \
    --add-exports java.base/java.lang.ref=ALL-UNNAMED \
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
    --add-exports java.management/com.sun.jmx.remote.security=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
    --add-exports java.sql/java.sql=ALL-UNNAMED \
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED \
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED \
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED \
    --add-opens java.base/java.lang.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED \
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED \
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
    --add-opens java.base/java.io=ALL-UNNAMED \
    --add-opens java.base/java.lang=ALL-UNNAMED \
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED \
    --add-opens java.base/java.nio=ALL-UNNAMED \
    --add-opens java.base/java.util=ALL-UNNAMED \
    --add-opens java.base/java.util.concurrent=ALL-UNNAMED \
    --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED \
    -Dio.netty.tryReflectionSetAccessible=true \
    -Dio.netty.allocator.useCacheForAllThreads=true \
    -Dio.netty.allocator.maxOrder=11 \
    -Djava.net.preferIPv4Stack=true \
    -Djava.io.tmpdir="$NODE/tmp" \
    -Dcassandra-foreground=yes \
    -Dcassandra.config="file://$NODE/cassandra.yaml" \
    -Dcassandra.storagedir="$NODE" \
    -Dcassandra.logdir="$NODE/logs" \
    -Dcassandra.triggers_dir="$NODE/triggers" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=0 \
    -Dlogback.configurationFile="$CONF_DIR/logback.xml" \
    -cp "$LIB/*" org.apache.cassandra.service.CassandraDaemon \
    </dev/null >>"$NODE/logs/stdout.log" 2>&1 &
  pid=$!
  echo "$pid" > "$PIDFILE"
  wait_ready "$pid" "$started"
  say "Cassandra $VERSION ready on 127.0.0.1:$CQL_PORT (pid $pid); started in $((SECONDS - started))s" \
    "(+${fetched}s fetching the classpath)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid="$(running_pid)"; then
      if cql_port_open; then say "running (pid $pid), CQL on 127.0.0.1:$CQL_PORT"; else say "starting (pid $pid)"; fi
    else
      say "stopped"; exit 3
    fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
