#!/usr/bin/env bash
# Install an offline Nextflow distribution built from Maven Central jars.
#
# Usage: scripts/install_nextflow.sh [DEST]
#
# DEST defaults to .nextflow-dist in the repository root. The script resolves
# io.nextflow:nextflow and its runtime dependencies with Maven
# (scripts/nextflow-pom.xml), copies the jars into DEST/lib and writes the
# launcher DEST/nextflow. Run Nextflow as DEST/nextflow, e.g.
# `.nextflow-dist/nextflow run . -profile test`.
#
# Environment:
#   NEXTFLOW_VERSION  Nextflow release to install. Default: the
#                     nextflow.version property in scripts/nextflow-pom.xml.
#   MAVEN_REPO_LOCAL  Maven local repository. Default: Maven's own setting,
#                     ~/.m2/repository unless ~/.m2/settings.xml sets another.
#                     Jars downloaded there are reused by later runs.
#
# Requires bash, Java 11 or later (the 24.10.8 launcher script recommends
# Java 11 to 23) and Maven 3 with network access to Maven Central or a mirror
# set in ~/.m2/settings.xml. Running the installed launcher needs no network.
# Tested with bash 5.2, OpenJDK 17 and Maven 3.8.7 on Debian 12.
#
# When DEST already contains the same version, installed by the same copy of
# this script and POM, the script exits without calling Maven.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
pom="$script_dir/nextflow-pom.xml"
stamp_name=.install-stamp

die() {
    echo "install_nextflow.sh: error: $*" >&2
    exit 1
}

log() {
    echo "install_nextflow.sh: $*" >&2
}

if [[ $# -gt 1 ]]; then
    die "expected at most one argument (DEST), got $#. Usage: $0 [DEST]"
fi
case "${1:-}" in
    -h|--help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
esac

dest=${1:-$repo_root/.nextflow-dist}
[[ -n "$dest" ]] || die "DEST is an empty string"
mkdir -p "$(dirname "$dest")"
dest="$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")"

[[ -f "$pom" ]] || die "POM not found: $pom"
default_version=$(sed -n 's:.*<nextflow.version>\(.*\)</nextflow.version>.*:\1:p' "$pom")
version=${NEXTFLOW_VERSION:-$default_version}
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-edge)?$ ]] \
    || die "invalid Nextflow version '$version', expected e.g. 24.10.8 (set NEXTFLOW_VERSION or fix $pom)"

# The stamp ties an installation to the version and to the exact script and
# POM that made it, so an edited launcher template or dependency list
# triggers a reinstall.
stamp_content="nextflow=$version
installer=$(cat "${BASH_SOURCE[0]}" "$pom" | { sha256sum 2>/dev/null || shasum -a 256; } | cut -d' ' -f1)"

if [[ -f "$dest/$stamp_name" && -x "$dest/nextflow" && -d "$dest/lib" ]] \
    && [[ "$(cat "$dest/$stamp_name")" == "$stamp_content" ]]; then
    log "Nextflow $version is already installed in $dest"
    exit 0
fi

# Reject a DEST that this script did not create, because the install step
# below deletes DEST before it moves the new distribution in.
if [[ -e "$dest" && ! -f "$dest/$stamp_name" ]]; then
    if [[ ! -d "$dest" ]] || [[ -n "$(ls -A "$dest")" ]]; then
        die "$dest exists and is not a Nextflow distribution made by this script. Remove it or choose another DEST."
    fi
fi

command -v mvn >/dev/null || die "mvn not found on PATH. Install Maven 3 (e.g. apt-get install maven)."
java_cmd=java
[[ -n "${JAVA_HOME:-}" ]] && java_cmd="$JAVA_HOME/bin/java"
command -v "$java_cmd" >/dev/null || die "java not found (tried '$java_cmd'). Install Java 11 or later or set JAVA_HOME."
java_version=$("$java_cmd" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
java_major=${java_version%%.*}
[[ "$java_major" =~ ^[0-9]+$ && "$java_major" -ge 11 ]] \
    || die "Java 11 or later is required, found '$java_version' at $java_cmd"

staging="$dest.staging.$$"
trap 'rm -rf "$staging"' EXIT
rm -rf "$staging"
mkdir -p "$staging/lib"

maven_args=(-B -q -Dstyle.color=never -f "$pom" "-Dnextflow.version=$version")
[[ -n "${MAVEN_REPO_LOCAL:-}" ]] && maven_args+=("-Dmaven.repo.local=$MAVEN_REPO_LOCAL")

log "resolving io.nextflow:nextflow:$version with Maven"
# prependGroupId keeps two artifacts with the same artifactId and version
# from overwriting each other in lib/. Maven 3.8 prints ANSI reset codes even
# with -B -q, so its output goes to a log that is shown only on failure.
if ! mvn "${maven_args[@]}" dependency:copy-dependencies \
        -DincludeScope=runtime \
        -Dmdep.prependGroupId=true \
        "-DoutputDirectory=$staging/lib" >"$staging/maven.log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$staging/maven.log" >&2
    die "Maven could not resolve io.nextflow:nextflow:$version (Maven output above). Check that this version and its nf-commons and nf-httpfs artifacts exist on Maven Central, or set NEXTFLOW_VERSION."
fi
rm "$staging/maven.log"

main_jar="$staging/lib/io.nextflow.nextflow-$version.jar"
[[ -f "$main_jar" ]] || die "Maven finished but $main_jar is missing"

# Fix the classpath order at install time. A `lib/*` wildcard would follow
# the file system's directory order, which differs between machines.
classpath=""
while IFS= read -r jar; do
    classpath+="${classpath:+:}\$NXF_DIST_LIB/$jar"
done < <(cd "$staging/lib" && ls -1 ./*.jar | sed 's:^\./::' | LC_ALL=C sort)
# The classpath is pasted into the launcher with sed and between double
# quotes, so it must not contain characters that either would interpret.
[[ "$classpath" =~ ^[A-Za-z0-9._:/\$-]+$ ]] \
    || die "unexpected characters in jar names under $staging/lib: $classpath"

{
    echo '#!/usr/bin/env bash'
    echo "# Offline launcher for Nextflow $version, written by scripts/install_nextflow.sh."
    echo "NXF_DIST_VERSION='$version'"
    cat <<'LAUNCHER'
#
# It starts nextflow.cli.Launcher from the jars in lib/ with the JVM options
# that Nextflow's own launcher script passes. Source: the file `nextflow` at
# the root of github.com/nextflow-io/nextflow, tag v24.10.8. That script also
# downloads the Nextflow jar, checks for a newer release and can update
# itself. This launcher does none of these and downloads nothing.
#
# Defaults set here (export another value to override):
#   NXF_HOME=$HOME/.nextflow           as in Nextflow's launcher. Nextflow keeps
#                                      plugins, secrets and assets here, and
#                                      uses plugin development mode without it.
#   NXF_OFFLINE=true                   no pulls or updates of remote pipelines.
#   NXF_PLUGINS_DEFAULT=false          no implicit plugins (nf-amazon for s3://
#                                      paths and the like).
# NOTE: in Nextflow 24.10.8 neither variable stops the download of a plugin
# named in a config `plugins {}` block or with -plugins. Offline, such a run
# fails unless $NXF_HOME/plugins/<id>-<version> already exists.
#   NXF_DISABLE_CHECK_LATEST=true      read by Nextflow's launcher script only.
# Also read, with the same meaning as in Nextflow's launcher: JAVA_CMD,
# JAVA_HOME, NXF_JAVA_HOME, NXF_OPTS, NXF_JVM_ARGS, NXF_TEMP,
# NXF_ENABLE_VIRTUAL_THREADS, NXF_PID_FILE, NXF_CLI_OPTS, NXF_REMOTE_DEBUG_PORT.
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}" 2>/dev/null || echo "${BASH_SOURCE[0]}")
NXF_DIST_LIB="$(cd "$(dirname "$self")" && pwd)/lib"

export NXF_HOME=${NXF_HOME:-$HOME/.nextflow}
export NXF_OFFLINE=${NXF_OFFLINE:-true}
export NXF_PLUGINS_DEFAULT=${NXF_PLUGINS_DEFAULT:-false}
export NXF_DISABLE_CHECK_LATEST=${NXF_DISABLE_CHECK_LATEST:-true}
export NXF_ORG=${NXF_ORG:-nextflow-io}
# Nextflow records NXF_CLI as the command line of a run (`nextflow log`).
export NXF_CLI="$0 $*"
# Nextflow's launcher drops JAVA_TOOL_OPTIONS, so do the same.
unset JAVA_TOOL_OPTIONS

if [[ -n "${NXF_JAVA_HOME:-}" ]]; then
    JAVA_CMD="$NXF_JAVA_HOME/bin/java"
elif [[ -z "${JAVA_CMD:-}" ]]; then
    if [[ -n "${JAVA_HOME:-}" ]]; then JAVA_CMD="$JAVA_HOME/bin/java"; else JAVA_CMD=java; fi
fi
export JAVA_CMD

args=("$@")
# NXF_CLI_OPTS is split on blanks on purpose, as in Nextflow's launcher.
# shellcheck disable=SC2206
[[ -n "${NXF_CLI_OPTS:-}" ]] && args+=(${NXF_CLI_OPTS})

# Scan the arguments the way Nextflow's launcher does: -D options before the
# command also go to the JVM, and the command name selects the JIT settings.
commands=" clone config drop help history info ls pull run view node console kuberun "
cmd=''
background=''
remote_debug=''
jvm_opts=()
for arg in ${args[@]+"${args[@]}"}; do
    case "$arg" in
        -D*) [[ -z "$cmd" ]] && jvm_opts+=("$arg") ;;
        -bg) background=1 ;;
        -remote-debug) remote_debug=1 ;;
        -download|-self-update|self-update)
            if [[ -z "$cmd" ]]; then
                echo "nextflow: error: '$arg' is not available in this offline distribution of Nextflow $NXF_DIST_VERSION. Rerun scripts/install_nextflow.sh with NEXTFLOW_VERSION set to change the version." >&2
                exit 1
            fi
            ;;
        -*) ;;
        *) [[ -z "$cmd" && "$commands" == *" $arg "* ]] && cmd=$arg ;;
    esac
done

java_opts=(-Dfile.encoding=UTF-8 -Dcom.sun.security.enableAIAcaIssuers=true)
# `console` opens a Swing window, so it runs in the background and needs AWT.
if [[ "$cmd" == console ]]; then
    background=1
else
    java_opts+=(-Djava.awt.headless=true)
fi
# Nextflow's launcher limits the JIT to C1, which starts faster, for every
# command except `run` and `node`.
[[ "$cmd" != run && "$cmd" != node ]] && java_opts+=(-XX:+TieredCompilation -XX:TieredStopAtLevel=1)
# shellcheck disable=SC2206
[[ -n "${NXF_OPTS:-}" ]] && java_opts+=(${NXF_OPTS})
[[ -n "${NXF_TEMP:-}" ]] && java_opts+=("-Djava.io.tmpdir=$NXF_TEMP")
[[ ${#jvm_opts[@]} -gt 0 ]] && java_opts+=("${jvm_opts[@]}")
# shellcheck disable=SC2206
[[ -n "${NXF_JVM_ARGS:-}" ]] && java_opts+=(${NXF_JVM_ARGS})
[[ -n "$remote_debug" ]] && java_opts+=("-agentlib:jdwp=transport=dt_socket,server=y,suspend=y,address=${NXF_REMOTE_DEBUG_PORT:-5005}")

# The same list as Nextflow's launcher. Java 16 and later deny reflective
# access to these JDK packages unless they are opened (Java 9 to 15 warn).
java_opts+=(
    --add-opens=java.base/java.lang=ALL-UNNAMED
    --add-opens=java.base/java.io=ALL-UNNAMED
    --add-opens=java.base/java.nio=ALL-UNNAMED
    --add-opens=java.base/java.net=ALL-UNNAMED
    --add-opens=java.base/java.util=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
    --add-opens=java.base/java.nio.file.spi=ALL-UNNAMED
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens=java.base/sun.nio.fs=ALL-UNNAMED
    --add-opens=java.base/sun.net.www.protocol.http=ALL-UNNAMED
    --add-opens=java.base/sun.net.www.protocol.https=ALL-UNNAMED
    --add-opens=java.base/sun.net.www.protocol.ftp=ALL-UNNAMED
    --add-opens=java.base/sun.net.www.protocol.file=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.vm=ALL-UNNAMED
    --add-opens=java.base/java.util.regex=ALL-UNNAMED
)

if [[ "${NXF_ENABLE_VIRTUAL_THREADS:-}" == true ]]; then
    java_version=$("$JAVA_CMD" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
    case "${java_version%%.*}" in
        19|20) java_opts+=(--enable-preview) ;;
        1|9|1[0-8])
            echo "nextflow: error: virtual threads (NXF_ENABLE_VIRTUAL_THREADS=true) require Java 19 or later, found $java_version" >&2
            exit 1
            ;;
    esac
fi

cmdline=("$JAVA_CMD" "${java_opts[@]}" -cp "__CLASSPATH__" nextflow.cli.Launcher ${args[@]+"${args[@]}"})

if [[ -n "$background" ]]; then
    "${cmdline[@]}" &
    echo $! >"${NXF_PID_FILE:-.nextflow.pid}"
    disown
    exit 0
fi
exec "${cmdline[@]}"
LAUNCHER
} >"$staging/nextflow.tmp"

# The launcher expands NXF_DIST_LIB at run time, so DEST can be moved.
sed "s|__CLASSPATH__|$classpath|" "$staging/nextflow.tmp" >"$staging/nextflow"
rm "$staging/nextflow.tmp"
chmod +x "$staging/nextflow"
printf '%s\n' "$stamp_content" >"$staging/$stamp_name"

# Check the new launcher before it replaces a working installation.
if ! reported=$("$staging/nextflow" -version 2>&1); then
    die "the new launcher failed to run 'nextflow -version': $reported"
fi
[[ "$reported" == *"version $version"* ]] \
    || die "'nextflow -version' did not report version $version. Output: $reported"

rm -rf "$dest"
mv "$staging" "$dest"
trap - EXIT
log "installed Nextflow $version in $dest ($(ls "$dest/lib" | wc -l) jars)"
