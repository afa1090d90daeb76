# meshota: the whole server side (`meshota up`) in one image.
#
# The install steps are scripts/install.sh, the same script scripts/setup.sh runs (without the
# test extras). No docker daemon runs where this is developed: scripts/verify_container.sh runs
# these very steps (read from this file) in a fresh Debian bookworm rootfs under chroot and starts
# the entrypoint there. Keep to what it understands: FROM, ARG, ENV, LABEL, WORKDIR, USER, COPY,
# RUN (shell form), VOLUME, EXPOSE, HEALTHCHECK, ENTRYPOINT and CMD (exec form).
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="meshota" \
      org.opencontainers.image.description="MQTT-SN gateway, blind relays and a Mender-compatible OTA server" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian packages (python3, venv, mosquitto, openssl, CA certificates), as root.
COPY scripts/install.sh /opt/meshota/src/scripts/install.sh
RUN /opt/meshota/src/scripts/install.sh packages && rm -rf /var/lib/apt/lists/*

# The service user, and the data directory it owns (the volume below starts as a copy of it).
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /data --shell /usr/sbin/nologin meshota \
    && install -d -o meshota -g meshota -m 0750 /data

# meshota into a venv owned by root: the service can read its code, not change it.
# .dockerignore keeps .venv, .git, tests and caches out of the build context.
COPY . /opt/meshota/src
RUN cd /opt/meshota/src && scripts/install.sh venv /opt/meshota/venv . \
    && install -D -m 0644 deploy/image.toml /etc/meshota/meshota.toml \
    && rm -rf /opt/meshota/src/build /opt/meshota/src/*.egg-info

ENV PATH=/opt/meshota/venv/bin:$PATH

USER meshota
WORKDIR /data
# The service user can run what root installed.
RUN meshota --version

VOLUME ["/data"]
# HTTP API (device + management), MQTT-SN over UDP, MQTT-SN over DTLS (deploy/image.toml).
EXPOSE 8080/tcp 1884/udp 1885/udp

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["meshota", "up"]
CMD ["--config", "/etc/meshota/meshota.toml", "--data", "/data"]
