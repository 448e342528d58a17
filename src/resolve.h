/* resolve — host name lookups off the caller's thread.
 *
 * Owns: a queue of lookups and up to a fixed number of threads that run getaddrinfo() for
 * them (started as lookups need them), and the finished lookups until they are taken.
 *
 * Threads: resolver_lookup(), resolver_take() and resolver_free() are for the owner's one
 * thread. A lookup that ends writes 8 bytes to the owner's eventfd (notify_fd) so that an
 * event loop wakes up and takes it. A lookup the system keeps waiting on (a DNS server that
 * does not answer) holds one thread until the system's own timeout; the others go on.
 *
 * Failures: resolver_new() writes a sentence into err; a lookup's own failure comes back
 * as getaddrinfo's code with it.
 */
#ifndef APISIM_RESOLVE_H
#define APISIM_RESOLVE_H

#include <netdb.h>
#include <stdint.h>

#include "util.h"

/* Lookups waiting or running at once, past which resolver_lookup() refuses more. */
#define RESOLVE_MAX_PENDING 1024

struct resolver;

/* A resolver of up to nthreads threads (1 or more), signalling finished lookups on
 * notify_fd (an eventfd the owner keeps open until resolver_free()). Returns 0 and *out,
 * or -1 with err. */
int resolver_new(struct resolver **out, unsigned nthreads, int notify_fd, char *err);

/* Queue a lookup of host and service (a port number) as for a TCP connection; tag comes
 * back with its answer. Returns 0, or -1 when RESOLVE_MAX_PENDING lookups are already
 * waiting or running, or out of memory (nothing queued). */
int resolver_lookup(struct resolver *r, const char *host, const char *service, uint64_t tag);

/* Take one finished lookup: returns 1 with its tag, getaddrinfo's code and its addresses
 * (the caller frees them with freeaddrinfo(); NULL when the code is not 0), or 0 when no
 * lookup has finished. */
int resolver_take(struct resolver *r, uint64_t *tag, int *gai, struct addrinfo **res);

/* Forget every lookup and return at once: a thread still waiting in getaddrinfo() frees
 * what it holds when that returns, and never writes to notify_fd again. NULL is fine. */
void resolver_free(struct resolver *r);

#endif
