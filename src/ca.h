/* ca — apisim's own certificate authority, for intercepting HTTPS (CONNECT) as a proxy.
 *
 * Owns: the CA's directory (created mode 0700 when missing) holding ca.pem (the
 * self-signed certificate clients are told to trust) and ca-key.pem (its EC P-256 key,
 * mode 0600); nothing else is ever written there or anywhere. Leaf certificates are minted
 * per host in memory (subjectAltName DNS or IP, signed by the CA, all with one EC key made
 * at open), kept in a bounded cache, never written.
 *
 * Threads: ca_leaf() may be called from any thread (the cache has a mutex).
 * Failures: every function that can fail writes a sentence into err naming the file or
 * the host.
 */
#ifndef APISIM_CA_H
#define APISIM_CA_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>

#include "util.h"

struct ca;

/* Leaves kept in memory; the oldest is dropped (and minted again when needed) past it. */
#define CA_CACHE_MAX 512

/* The directory the CA lives in when --ca-dir is not given: $APISIM_CA_DIR, else
 * $XDG_CONFIG_HOME/apisim/ca, else $HOME/.config/apisim/ca. Returns 0 with out, or -1 with
 * err (no HOME, or the path does not fit in n bytes). */
int ca_default_dir(char *out, size_t n, char *err);

/* Open the CA in dir, creating dir, the key and the certificate when missing (under an
 * exclusive lock on the directory, so two processes starting at once make one CA). Sets
 * *created to 1 when this call made it (created may be NULL). Returns 0 and *out (free with
 * ca_free()), or -1 with err: a directory that cannot be made, a key without a
 * certificate (or the reverse), files that do not parse, or a key that is not the
 * certificate's. */
int ca_open(struct ca **out, const char *dir, int *created, char *err);

/* The path of the CA certificate (ca.pem), what clients are told to trust. Owned by ca. */
const char *ca_cert_path(const struct ca *ca);

/* The CA certificate (owned by ca). */
X509 *ca_cert(const struct ca *ca);

/* 1 when host is a name a leaf can be minted for: a DNS name (letters, digits, '-', '_',
 * '.', '*' at most 253 bytes) or an IPv4/IPv6 address (without brackets). */
int ca_host_valid(const char *host);

/* The leaf certificate for host (a DNS name or an IP address, without port or brackets),
 * minted on first use and cached. Returns 0 with *cert (a reference the caller releases
 * with X509_free()) and *key (a reference the caller releases with EVP_PKEY_free()), or
 * -1 with err (a host ca_host_valid() refuses, or OpenSSL failed). */
int ca_leaf(struct ca *ca, const char *host, X509 **cert, EVP_PKEY **key, char *err);

/* Leaves minted since open (cache misses), for tests and logs. */
unsigned long ca_minted(const struct ca *ca);

/* Free the CA and its cache. NULL does nothing. */
void ca_free(struct ca *ca);

#endif
