/* apisim_floor — the floor of apisim's stack: a bare libmicrohttpd server that answers
 * every request with the same 1 KiB JSON body, with the daemon flags apisim's replay and
 * mock servers use. bench/run.sh measures apisim against it: whatever apisim spends beyond
 * this server's cost is apisim's own.
 *
 * usage: apisim_floor [PORT]     (default 0: a free port; listens on 127.0.0.1)
 * Prints "listening on http://127.0.0.1:PORT" first, flushed; stops on SIGTERM or SIGINT.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FLOOR_BODY_LEN 1024

static char body[FLOOR_BODY_LEN];

/* A 1 KiB JSON object: {"id":1,"name":"bench","data":"xxxx...x"} padded to exactly 1024
 * bytes. bench/run.sh fetches it from this server, so apisim answers the same bytes. */
static void make_body(void)
{
    static const char head[] = "{\"id\":1,\"name\":\"bench\",\"data\":\"";
    static const char tail[] = "\"}";
    size_t h = sizeof head - 1, t = sizeof tail - 1;
    memcpy(body, head, h);
    for (size_t i = h; i < FLOOR_BODY_LEN - t; i++)
        body[i] = (char)('a' + (i % 26));
    memcpy(body + FLOOR_BODY_LEN - t, tail, t);
}

/* Answers on the second call: MHD 0.9.75 closes a keep-alive connection when the first
 * call (before the request is fully read) queues the response. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    static int marker;
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    if (*req_cls == NULL) {
        *req_cls = &marker;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* discard any request body */
        return MHD_YES;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(FLOOR_BODY_LEN, body, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result rc = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = 1;
    struct MHD_Daemon *d = NULL;
    unsigned port = 0;
    if (argc > 2 || (argc == 2 && sscanf(argv[1], "%u", &port) != 1) || port > 65535) {
        fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
        return 2;
    }
    make_body();

    /* Block the stop signals before MHD starts its threads, so they inherit the mask and
     * only sigwait below sees them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = cores > 1 ? (unsigned)cores : 1;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_USE_SUPPRESS_DATE_NO_CLOCK | MHD_USE_ITC;
    d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR,
                         (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, 1024u,
                         MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
                         threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, threads,
                         MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "apisim_floor: cannot listen on 127.0.0.1:%u\n", port);
        goto out;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0) {
        fprintf(stderr, "apisim_floor: cannot tell the bound port\n");
        goto out;
    }
    printf("listening on http://127.0.0.1:%u\n", (unsigned)info->port);
    fflush(stdout);

    int sig = 0;
    sigwait(&stop, &sig);
    rc = 0;
out:
    if (d != NULL)
        MHD_stop_daemon(d);
    return rc;
}
