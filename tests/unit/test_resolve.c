/* Unit tests for resolve.c: lookups end on the owner's eventfd with their own tags and
 * answers (an address, and a failure with getaddrinfo's code), and a resolver freed while
 * lookups are queued or running lets them end on their own (ASan checks nothing leaks or is
 * touched after it is freed). Only names that need no DNS server: numeric addresses and
 * localhost. */
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "resolve.h"
#include "util.h"

#include "check.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_answers_come_back_tagged(void)
{
    char err[APISIM_ERR_LEN];
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct resolver *r = NULL;
    CHECK(efd >= 0 && resolver_new(&r, 2, efd, err) == 0, "resolver_new: %s", err);
    if (!r)
        return;
    CHECK(resolver_lookup(r, "127.0.0.1", "8080", 11) == 0, "queue 127.0.0.1");
    CHECK(resolver_lookup(r, "localhost", "443", 22) == 0, "queue localhost");
    CHECK(resolver_lookup(r, "127.0.0.1", "no-such-service-name", 33) == 0, "queue a bad one");
    int seen[3] = {0}, codes[3] = {-1, -1, -1}, ports_ok = 1;
    int64_t deadline = mono_ms() + 10000;
    int taken = 0;
    while (taken < 3 && mono_ms() < deadline) {
        struct pollfd p = {.fd = efd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        uint64_t v;
        ssize_t n = read(efd, &v, sizeof v);
        (void)n;
        uint64_t tag;
        int gai;
        struct addrinfo *res;
        while (resolver_take(r, &tag, &gai, &res) == 1) {
            int i = tag == 11 ? 0 : tag == 22 ? 1 : tag == 33 ? 2 : -1;
            CHECK(i >= 0, "an unknown tag %llu", (unsigned long long)tag);
            if (i >= 0) {
                seen[i]++;
                codes[i] = gai;
            }
            CHECK((gai == 0) == (res != NULL), "tag %llu: code %d, addresses %p",
                  (unsigned long long)tag, gai, (void *)res);
            if (res && res->ai_family == AF_INET && tag == 11)
                ports_ok &= ntohs(((struct sockaddr_in *)(void *)res->ai_addr)->sin_port) == 8080;
            if (res)
                freeaddrinfo(res);
            taken++;
        }
    }
    CHECK(seen[0] == 1 && seen[1] == 1 && seen[2] == 1, "each answer once (%d %d %d)", seen[0],
          seen[1], seen[2]);
    CHECK(codes[0] == 0 && codes[1] == 0, "the addresses resolve (%d, %d)", codes[0], codes[1]);
    CHECK(codes[2] != 0, "the unknown service fails (%d)", codes[2]);
    CHECK(ports_ok, "the port comes back in the address");
    uint64_t tag;
    int gai;
    struct addrinfo *res;
    CHECK(resolver_take(r, &tag, &gai, &res) == 0, "nothing more to take");
    resolver_free(r);
    close(efd);
}

static void test_free_with_lookups_under_way(void)
{
    char err[APISIM_ERR_LEN];
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct resolver *r = NULL;
    CHECK(efd >= 0 && resolver_new(&r, 4, efd, err) == 0, "resolver_new: %s", err);
    if (!r)
        return;
    for (uint64_t i = 0; i < 200; i++)
        CHECK(resolver_lookup(r, "localhost", "80", i) == 0, "queue %llu", (unsigned long long)i);
    resolver_free(r); /* the threads finish what they hold, free it, and never write efd */
    close(efd);
}

int main(void)
{
    test_answers_come_back_tagged();
    test_free_with_lookups_under_way();
    if (failures) {
        fprintf(stderr, "test_resolve: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_resolve: ok\n");
    return 0;
}
