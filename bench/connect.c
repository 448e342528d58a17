/* apisim_connect_bench — N sequential GETs with libcurl, for bench/connect.sh: through a
 * proxy's CONNECT tunnel kept alive (one TLS handshake, then requests), with a fresh
 * connection and handshake per request (--fresh), or plain without a proxy.
 *
 * usage: apisim_connect_bench URL N [--proxy PROXY_URL] [--cacert FILE] [--fresh]
 * Prints one line: "BENCH requests=N ok=K wall_us=W" (K: answers with status 200), so the
 * script reads figures, not prose. Exit 1 when a transfer fails.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t discard(char *p, size_t size, size_t n, void *cls)
{
    (void)p;
    (void)cls;
    return size * n;
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s URL N [--proxy URL] [--cacert FILE] [--fresh]\n", argv[0]);
        return 2;
    }
    const char *url = argv[1], *proxy = NULL, *cacert = NULL;
    long n = strtol(argv[2], NULL, 10);
    int fresh = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--proxy") == 0 && i + 1 < argc)
            proxy = argv[++i];
        else if (strcmp(argv[i], "--cacert") == 0 && i + 1 < argc)
            cacert = argv[++i];
        else if (strcmp(argv[i], "--fresh") == 0)
            fresh = 1;
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *e = curl_easy_init();
    if (!e)
        return 1;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, proxy ? proxy : "");
    curl_easy_setopt(e, CURLOPT_NOPROXY, proxy ? "" : "*");
    if (cacert)
        curl_easy_setopt(e, CURLOPT_CAINFO, cacert);
    if (fresh) {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
        curl_easy_setopt(e, CURLOPT_SSL_SESSIONID_CACHE, 0L); /* a full handshake each time */
    }
    long ok = 0;
    long long t0 = now_us();
    for (long i = 0; i < n; i++) {
        CURLcode rc = curl_easy_perform(e);
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK) {
            fprintf(stderr, "request %ld: %s\n", i, curl_easy_strerror(rc));
            break;
        }
        ok += status == 200;
    }
    long long t1 = now_us();
    printf("BENCH requests=%ld ok=%ld wall_us=%lld\n", n, ok, t1 - t0);
    curl_easy_cleanup(e);
    curl_global_cleanup();
    return ok == n ? 0 : 1;
}
