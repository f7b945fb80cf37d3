# Shared by bench/proxy.sh and bench/proxy-cpu.sh (sourced, not run): the
# peers both benches start, configured alike. Needs $work, $B1-$B3 (the
# backends' ports), $HAPROXY (its port) and $THREADS set by the caller.

# The backends: three nginx server blocks, one small static body each.
write_backends_conf() {
cat > "$work/nginx-backends/nginx.conf" <<CONF
error_log $work/nginx-backends/error.log warn; pid $work/nginx-backends/nginx.pid; daemon off;
worker_rlimit_nofile 65536;
events { worker_connections 4096; }
worker_processes 1;
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $work/nginx-backends; proxy_temp_path $work/nginx-backends;
    fastcgi_temp_path $work/nginx-backends; uwsgi_temp_path $work/nginx-backends; scgi_temp_path $work/nginx-backends;
    server { listen 127.0.0.1:$B1; location / { default_type text/plain; return 200 "backend-1\n"; } }
    server { listen 127.0.0.1:$B2; location / { default_type text/plain; return 200 "backend-2\n"; } }
    server { listen 127.0.0.1:$B3; location / { default_type text/plain; return 200 "backend-3\n"; } }
}
CONF
}

# HAProxy: round-robin over the backends, keep-alive on both sides.
write_haproxy_cfg() {
cat > "$work/haproxy.cfg" <<CONF
global
    nbthread $THREADS
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend bench
    bind 127.0.0.1:$HAPROXY
    default_backend backends
backend backends
    balance roundrobin
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
    server b3 127.0.0.1:$B3
CONF
}

# Waits until something listens on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1; see $work" >&2
    exit 1
}
