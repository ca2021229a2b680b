# exgate in a container: a static binary on an empty base, as a non-root
# user. Not built by CI here (the project's machines reach no container
# registry to pull golang:1.26 from); cmd/exgate's TestDockerfile checks it
# instead: the final image's shape, the files it copies, and its build
# command run as written (a static, version-stamped binary).
#
#   docker build -t exgate .
#   docker run -p 7993:7993 -v exgate:/var/lib/exgate exgate     # devices
#   # MQTT and the API from outside the container: your configuration binds
#   # them to 0.0.0.0 (MQTT with authentication, or allow_anonymous):
#   docker run -p 7993:7993 -p 1883:1883 -p 127.0.0.1:18083:18083 \
#     -v ./exgate.yaml:/etc/exgate/exgate.yaml -v exgate:/var/lib/exgate exgate
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /exgate ./cmd/exgate \
 && mkdir -p /state && chown 65532:65532 /state

FROM scratch
COPY --from=build /exgate /usr/bin/exgate
COPY --from=build --chown=65532:65532 /state /var/lib/exgate
COPY packaging/exgate.yaml /etc/exgate/exgate.yaml
USER 65532:65532
WORKDIR /var/lib/exgate
VOLUME ["/var/lib/exgate"]
# devices, MQTT, MQTT over TLS, the management API. The packaged
# configuration keeps MQTT and the API on the container's loopback: mount
# your own file to publish them (MQTT off loopback needs authentication, or
# broker.embedded.allow_anonymous: true).
EXPOSE 7993 1883 8883 18083
ENTRYPOINT ["/usr/bin/exgate", "-c", "/etc/exgate/exgate.yaml"]
