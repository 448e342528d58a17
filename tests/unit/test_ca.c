/* ca: the CA is made once and reused, the key is 0600, leaves are signed by the CA, name
 * their host in subjectAltName and are valid now. */
#include <dirent.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ca.h"
#include "check.h"

static unsigned char *der_of(X509 *x, int *len)
{
    unsigned char *der = NULL;
    *len = i2d_X509(x, &der);
    return der;
}

static int count_entries(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    if (d)
        closedir(d);
    return n;
}

int main(void)
{
    char tmpl[] = "/tmp/apisim-test-ca-XXXXXX", dir[512], key[600], err[APISIM_ERR_LEN];
    CHECK(mkdtemp(tmpl) != NULL, "mkdtemp");
    snprintf(dir, sizeof dir, "%s/nested/ca", tmpl);
    snprintf(key, sizeof key, "%s/ca-key.pem", dir);

    struct ca *ca = NULL, *again = NULL;
    int created = 0;
    CHECK(ca_open(&ca, dir, &created, err) == 0, "open: %s", err);
    CHECK(created == 1, "first open creates");
    struct stat st;
    CHECK(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600, "key mode %o", st.st_mode & 0777);
    CHECK(count_entries(dir) == 2, "only ca.pem and ca-key.pem are written");

    /* Reopened: the same certificate, not a new one. */
    CHECK(ca_open(&again, dir, &created, err) == 0, "reopen: %s", err);
    CHECK(created == 0, "second open reuses");
    int l1, l2;
    unsigned char *d1 = der_of(ca_cert(ca), &l1), *d2 = der_of(ca_cert(again), &l2);
    CHECK(l1 > 0 && l1 == l2 && memcmp(d1, d2, (size_t)l1) == 0, "same CA certificate");
    OPENSSL_free(d1);
    OPENSSL_free(d2);
    ca_free(again);

    X509_STORE *trust = X509_STORE_new();
    X509_STORE_add_cert(trust, ca_cert(ca));
    static const struct {
        const char *host;
        int ip;
    } cases[] = {
        {"api.example.test", 0}, {"localhost", 0}, {"127.0.0.1", 1}, {"::1", 1},
        {"*.example.test", 0},
    };
    X509 *first = NULL;
    for (size_t i = 0; i < N(cases); i++) {
        X509 *leaf = NULL;
        EVP_PKEY *pkey = NULL;
        CHECK(ca_leaf(ca, cases[i].host, &leaf, &pkey, err) == 0, "%s: %s", cases[i].host, err);
        if (!leaf)
            continue;
        CHECK(X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(ca_cert(ca))) == 0,
              "%s: issuer is the CA", cases[i].host);
        CHECK(X509_verify(leaf, X509_get0_pubkey(ca_cert(ca))) == 1, "%s: signed by the CA",
              cases[i].host);
        CHECK(X509_check_private_key(leaf, pkey) == 1, "%s: key fits", cases[i].host);
        if (cases[i].ip)
            CHECK(X509_check_ip_asc(leaf, cases[i].host, 0) == 1, "%s: IP SAN", cases[i].host);
        else if (cases[i].host[0] != '*')
            CHECK(X509_check_host(leaf, cases[i].host, 0, 0, NULL) == 1, "%s: DNS SAN",
                  cases[i].host);
        CHECK(X509_cmp_current_time(X509_get0_notBefore(leaf)) < 0, "%s: valid from the past",
              cases[i].host);
        CHECK(X509_cmp_current_time(X509_get0_notAfter(leaf)) > 0, "%s: valid now", cases[i].host);
        /* A TLS client's check: chain to the CA, purpose server. */
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        X509_STORE_CTX_init(ctx, trust, leaf, NULL);
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
        CHECK(X509_verify_cert(ctx) == 1, "%s: verifies: %s", cases[i].host,
              X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
        X509_STORE_CTX_free(ctx);
        if (i == 0)
            first = leaf;
        else
            X509_free(leaf);
        EVP_PKEY_free(pkey);
    }
    /* Cached: the same host gets the same certificate, minted once. */
    unsigned long minted = ca_minted(ca);
    X509 *cached = NULL;
    EVP_PKEY *pk = NULL;
    CHECK(ca_leaf(ca, "API.example.test", &cached, &pk, err) == 0, "cached: %s", err);
    CHECK(cached == first, "same host, same certificate");
    CHECK(ca_minted(ca) == minted, "no new mint for a cached host");
    X509_free(cached);
    X509_free(first);
    EVP_PKEY_free(pk);

    static const char *bad[] = {"", "a b", "host:443", "[::1]", "a/b", ".lead", "a..b"};
    for (size_t i = 0; i < N(bad); i++) {
        X509 *x = NULL;
        EVP_PKEY *p = NULL;
        CHECK(ca_leaf(ca, bad[i], &x, &p, err) == -1 && x == NULL, "\"%s\" refused", bad[i]);
        CHECK(strstr(err, "not a host name") != NULL, "\"%s\": err names it: %s", bad[i], err);
    }
    /* The cache is bounded: past CA_CACHE_MAX hosts it still answers. */
    for (int i = 0; i < CA_CACHE_MAX + 5; i++) {
        char host[64];
        snprintf(host, sizeof host, "h%d.example.test", i);
        X509 *x = NULL;
        EVP_PKEY *p = NULL;
        CHECK(ca_leaf(ca, host, &x, &p, err) == 0, "%s: %s", host, err);
        X509_free(x);
        EVP_PKEY_free(p);
    }
    CHECK(count_entries(dir) == 2, "leaves are never written");
    X509_STORE_free(trust);
    ca_free(ca);

    /* A key without its certificate is an error naming both, not a silent new CA. */
    char cert[600];
    snprintf(cert, sizeof cert, "%s/ca.pem", dir);
    unlink(cert);
    CHECK(ca_open(&again, dir, NULL, err) == -1, "half a CA refused");
    CHECK(strstr(err, "ca-key.pem") && strstr(err, "ca.pem"), "err: %s", err);
    unlink(key);
    rmdir(dir);
    snprintf(dir, sizeof dir, "%s/nested", tmpl);
    rmdir(dir);
    rmdir(tmpl);
    return failures ? 1 : 0;
}
