package api

import "net/http"

// openapi serves a small OpenAPI 3 description of the API.
func openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(openapiDoc))
}

const openapiDoc = `{
  "openapi": "3.0.3",
  "info": {"title": "exgate management API", "version": "1", "description": "EMQX-compatible paths for the ExProto gateway."},
  "components": {
    "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
    "schemas": {
      "Error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
      "Client": {"type": "object", "properties": {
        "clientid": {"type": "string"}, "username": {"type": "string"}, "conn_id": {"type": "string"}, "node": {"type": "string"},
        "proto_name": {"type": "string"}, "proto_ver": {"type": "string"}, "ip_address": {"type": "string"}, "port": {"type": "integer"},
        "connected": {"type": "boolean"}, "conn_state": {"type": "string", "enum": ["connecting", "connected", "disconnected"]},
        "created_at": {"type": "string", "description": "2024-05-01T10:00:00.123+00:00"}, "connected_at": {"type": "string"}, "disconnected_at": {"type": "string"},
        "keepalive": {"type": "integer"}, "is_bridge": {"type": "boolean"}, "clean_start": {"type": "boolean"}, "expiry_interval": {"type": "integer"},
        "subscriptions_cnt": {"type": "integer"}, "recv_oct": {"type": "integer"}, "send_oct": {"type": "integer"},
        "mqueue_len": {"type": "integer"}, "mqueue_max": {"type": "integer"}, "mqueue_dropped": {"type": "integer"},
        "recv_cnt": {"type": "integer"}, "recv_pkt": {"type": "integer"}, "recv_msg": {"type": "integer"}, "send_cnt": {"type": "integer"}, "send_pkt": {"type": "integer"}, "send_msg": {"type": "integer"},
        "subscriptions_max": {"type": "integer"}, "inflight_cnt": {"type": "integer"}, "inflight_max": {"type": "integer"}, "awaiting_rel_cnt": {"type": "integer"}, "awaiting_rel_max": {"type": "integer"},
        "events_queued": {"type": "integer"}}},
      "Subscription": {"type": "object", "properties": {"topic": {"type": "string"}, "qos": {"type": "integer"}}}
    }
  },
  "security": [{"basic": []}],
  "paths": {
    "/api/v5/gateways": {"get": {"summary": "The node's gateways (exgate: exproto alone), each as GET /api/v5/gateways/exproto", "responses": {"200": {"description": "[Gateway]"}}}},
    "/api/v5/gateways/exproto/enable/{enable}": {"put": {"summary": "Enable (true) or disable (false) the gateway at once: disabling closes every listener and device ({shutdown,gateway_stopped}); kept in api.changes_file",
      "parameters": [{"name": "enable", "in": "path", "required": true, "schema": {"type": "boolean"}}],
      "responses": {"204": {"description": "done"}, "400": {"description": "Error: BAD_REQUEST"}}}},
    "/api/v5/gateways/exproto": {"get": {"summary": "Gateway status, connections, listeners and counters", "responses": {"200": {"description": "ok"}}},
      "put": {"summary": "With no body: re-read the configuration file and apply what can change while running. With a body (EMQX's update): {\"enable\": bool}; other gateway settings live in the configuration file and are refused with NOT_SUPPORTED",
        "responses": {"200": {"description": "reloaded: {reloaded, needs_restart}"}, "204": {"description": "updated"}, "400": {"description": "Error: BAD_CONFIG, BAD_REQUEST or NOT_SUPPORTED"}, "501": {"description": "reload: started without a configuration file"}}}},
    "/api/v5/gateways/exproto/listeners": {"get": {"summary": "Every configured listener: its settings (not its authentication chain) and, while it runs, its address, connection counts and refusals", "responses": {"200": {"description": "[Listener]"}}},
      "post": {"summary": "Create a listener: {type, name, bind, …settings as in gateway.exproto.listeners}; opens at once, kept in api.changes_file",
        "responses": {"201": {"description": "Listener"}, "400": {"description": "Error: BAD_REQUEST (exists already, unknown key, bad value, address in use)"}}}},
    "/api/v5/gateways/exproto/listeners/{id}": {
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "exproto:<tcp|ssl|udp|dtls>:<name>"}],
      "get": {"summary": "One listener", "responses": {"200": {"description": "Listener"}, "404": {"description": "Error: NOT_FOUND"}}},
      "put": {"summary": "Change the settings the body names (the others keep their values; what GET returned may be sent back); a new bind or TLS setting rebinds it, limits and rules apply to new connections",
        "responses": {"200": {"description": "Listener"}, "400": {"description": "Error: BAD_REQUEST"}, "404": {"description": "Error: NOT_FOUND"}}},
      "delete": {"summary": "Stop the listener (its devices stay connected); refused for the last one (disable the gateway instead)",
        "responses": {"204": {"description": "deleted"}, "400": {"description": "Error: BAD_REQUEST"}, "404": {"description": "Error: NOT_FOUND"}}}},
    "/api/v5/gateways/exproto/clients": {"get": {"summary": "Devices, paged and filtered",
      "parameters": [
        {"name": "page", "in": "query", "schema": {"type": "integer"}}, {"name": "limit", "in": "query", "schema": {"type": "integer"}},
        {"name": "clientid", "in": "query", "schema": {"type": "string"}}, {"name": "username", "in": "query", "schema": {"type": "string"}},
        {"name": "ip_address", "in": "query", "schema": {"type": "string"}}, {"name": "conn_state", "in": "query", "schema": {"type": "string"}},
        {"name": "proto_name", "in": "query", "schema": {"type": "string"}},
        {"name": "like_clientid", "in": "query", "schema": {"type": "string"}}, {"name": "like_username", "in": "query", "schema": {"type": "string"}},
        {"name": "gte_connected_at", "in": "query", "schema": {"type": "string"}}, {"name": "lte_connected_at", "in": "query", "schema": {"type": "string"}}],
      "responses": {"200": {"description": "{data: [Client], meta: {page, limit, count, hasnext}}"}}}},
    "/api/v5/gateways/exproto/clients/{clientid}": {
      "get": {"summary": "One device", "responses": {"200": {"description": "Client"}, "404": {"description": "Error"}}},
      "delete": {"summary": "Kick a device ({shutdown,kicked})", "responses": {"204": {"description": "kicked"}, "404": {"description": "Error"}}}},
    "/api/v5/gateways/exproto/clients/{clientid}/subscriptions": {
      "get": {"summary": "A device's subscriptions", "responses": {"200": {"description": "[Subscription]"}}},
      "post": {"summary": "Subscribe a device", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Subscription"}}}}, "responses": {"201": {"description": "Subscription"}}}},
    "/api/v5/gateways/exproto/clients/{clientid}/subscriptions/{topic}": {
      "delete": {"summary": "Unsubscribe a device (topic URL-encoded)", "responses": {"204": {"description": "unsubscribed"}}}},
    "/api/v5/gateways/exproto/trace": {
      "get": {"summary": "Traces, running and finished", "responses": {"200": {"description": "[Trace]"}}},
      "post": {"summary": "Start a trace of a clientid or a topic: {\"name\", \"clientid\"|\"topic\", \"duration\": \"10m\"}", "responses": {"201": {"description": "Trace"}, "400": {"description": "Error"}}}},
    "/api/v5/gateways/exproto/trace/{name}": {"delete": {"summary": "Stop and remove a trace", "responses": {"204": {"description": "removed"}}}},
    "/api/v5/gateways/exproto/trace/{name}/download": {"get": {"summary": "The trace's log file", "responses": {"200": {"description": "text"}}}},
    "/api/v5/banned": {"get": {"summary": "Banned clientids, usernames and peer hosts"}, "post": {"summary": "Ban one: {\"as\": \"clientid\"|\"username\"|\"peerhost\", \"who\", \"reason\", \"until\"}"}},
    "/api/v5/banned/{as}/{who}": {"delete": {"summary": "Lift a ban"}},
    "/api/v5/log": {"get": {"summary": "The log level"}, "put": {"summary": "Set the log level at runtime: {\"level\": \"debug\"}"}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "security": []}},
    "/healthz": {"get": {"summary": "The process is up", "security": []}},
    "/readyz": {"get": {"summary": "Listeners bound and a handler reachable", "security": []}}
  }
}`
