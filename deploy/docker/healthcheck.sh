#!/bin/bash
# Container health check without curl or wget in the image: GET /readyz over bash's /dev/tcp.
# Healthy only on HTTP 200 (every model loaded and warmed, not draining).
port="${HTTP_ADDR##*:}"
exec 3<>"/dev/tcp/127.0.0.1/${port:-8080}" || exit 1
printf 'GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS=' ' read -r -t 3 _ status _ <&3 || exit 1
[[ "$status" == 200 ]]
