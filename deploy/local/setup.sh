#!/usr/bin/env bash
# Installs, from Debian's packages, what paystream's build and tests need and a fresh
# machine may lack: a C toolchain (librdkafka is built from source), PostgreSQL, Redis,
# kcat, Prometheus, and Java 17 with Maven (for deploy/local/servers.sh). Runs apt only
# when a package is missing. Needs root or sudo.
set -euo pipefail

packages=(build-essential postgresql redis-server kcat prometheus maven openjdk-17-jre-headless)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# Java and Maven may come from elsewhere (this project's machines have a Temurin JDK).
command -v java >/dev/null && missing=("${missing[@]/openjdk-17-jre-headless/}")
command -v mvn >/dev/null && missing=("${missing[@]/maven/}")
read -r -a missing <<<"${missing[*]}"
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "setup.sh: every package is installed"
    exit 0
fi
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
echo "setup.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
