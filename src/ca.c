#include "ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define CA_CERT_FILE "ca.pem"
#define CA_KEY_FILE "ca-key.pem"
#define CA_PATH_MAX 4096
#define CA_HOST_MAX 253
#define CA_DAYS (10 * 365)   /* the CA's own validity */
#define LEAF_DAYS 365        /* a leaf's validity (within the CA's) */
#define LEAF_BACKDATE 86400L /* seconds a leaf is valid before now (client clocks lag) */

struct leaf {
    char *host;
    X509 *cert;
    unsigned long used; /* tick of the last lookup: the smallest is dropped when full */
};

struct ca {
    char cert_path[CA_PATH_MAX];
    X509 *cert;
    EVP_PKEY *key;      /* the CA's key */
    EVP_PKEY *leaf_key; /* one key for every leaf: minting is a signature, not a keygen */
    pthread_mutex_t mu;
    struct leaf cache[CA_CACHE_MAX];
    size_t ncache;
    unsigned long tick;
    unsigned long minted;
};

/* OpenSSL's reason for the last failure, appended to err after prefix. */
static void ssl_error(char *err, const char *prefix)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown OpenSSL error";
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    snprintf(err, APISIM_ERR_LEN, "%.200s: %.255s", prefix, reason);
}

int ca_default_dir(char *out, size_t n, char *err)
{
    const char *env = getenv("APISIM_CA_DIR");
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    int w;
    if (env && env[0])
        w = snprintf(out, n, "%s", env);
    else if (xdg && xdg[0])
        w = snprintf(out, n, "%s/apisim/ca", xdg);
    else if (home && home[0])
        w = snprintf(out, n, "%s/.config/apisim/ca", home);
    else {
        snprintf(err, APISIM_ERR_LEN,
                 "no directory for the CA: set APISIM_CA_DIR (or HOME), or pass --ca-dir DIR");
        return -1;
    }
    if (w < 0 || (size_t)w >= n) {
        snprintf(err, APISIM_ERR_LEN, "the CA directory's path is too long");
        return -1;
    }
    return 0;
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *dir, char *err)
{
    char p[CA_PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
        snprintf(err, APISIM_ERR_LEN, "CA directory path too long");
        return -1;
    }
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            snprintf(err, APISIM_ERR_LEN, "cannot create %.300s: %s", p, strerror(errno));
            return -1;
        }
        *s = '/';
    }
    if (mkdir(p, 0700) < 0 && errno != EEXIST) {
        snprintf(err, APISIM_ERR_LEN, "cannot create the CA directory %.300s: %s", p,
                 strerror(errno));
        return -1;
    }
    return 0;
}

static int set_random_serial(X509 *x)
{
    int rc = -1;
    BIGNUM *bn = BN_new();
    ASN1_INTEGER *serial = NULL;
    /* 127 random bits, top bit clear: positive and unique enough (RFC 5280 asks for <= 20
     * bytes). */
    if (bn && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
        (serial = BN_to_ASN1_INTEGER(bn, NULL)) && X509_set_serialNumber(x, serial) == 1)
        rc = 0;
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    return rc;
}

/* Add an extension given in OpenSSL's config syntax (fixed strings only, never input). */
static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

/* Write a PEM file that does not exist yet, with the given mode. */
static int write_new_file(const char *path, mode_t mode, int (*write_fn)(FILE *, void *), void *obj,
                          char *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, APISIM_ERR_LEN, "cannot create %.300s: %s", path, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(path);
        snprintf(err, APISIM_ERR_LEN, "cannot write %.300s: %s", path, strerror(errno));
        return -1;
    }
    int ok = write_fn(f, obj);
    if (fclose(f) != 0 || !ok) {
        unlink(path);
        snprintf(err, APISIM_ERR_LEN, "cannot write %.300s", path);
        return -1;
    }
    return 0;
}

static int write_key(FILE *f, void *key)
{
    return PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
}

static int write_cert(FILE *f, void *cert)
{
    return PEM_write_X509(f, cert) == 1;
}

/* Make a new CA: a P-256 key and a self-signed certificate, valid for CA_DAYS. */
static int create_ca(struct ca *ca, const char *key_path, char *err)
{
    int rc = -1;
    X509_NAME *name = NULL;
    X509V3_CTX v3;
    char cn[128];
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(cn, sizeof cn, "apisim CA (%.60s)", host[0] ? host : "local");
    if (!(ca->key = EVP_EC_gen("P-256")) || !(ca->cert = X509_new())) {
        ssl_error(err, "cannot make the CA key");
        goto out;
    }
    X509 *x = ca->cert;
    if (X509_set_version(x, 2) != 1 || set_random_serial(x) < 0 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -LEAF_BACKDATE) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), (long)CA_DAYS * 86400L) ||
        X509_set_pubkey(x, ca->key) != 1 || !(name = X509_NAME_new()) ||
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"apisim", -1,
                                   -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_subject_name(x, name) != 1 || X509_set_issuer_name(x, name) != 1) {
        ssl_error(err, "cannot make the CA certificate");
        goto out;
    }
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
        add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature") < 0 ||
        add_ext(x, &v3, NID_subject_key_identifier, "hash") < 0 ||
        X509_sign(x, ca->key, EVP_sha256()) <= 0) {
        ssl_error(err, "cannot sign the CA certificate");
        goto out;
    }
    /* The key first: a certificate on disk always has its key beside it. */
    if (write_new_file(key_path, 0600, write_key, ca->key, err) < 0)
        goto out;
    if (write_new_file(ca->cert_path, 0644, write_cert, ca->cert, err) < 0) {
        unlink(key_path);
        goto out;
    }
    rc = 0;
out:
    X509_NAME_free(name);
    return rc;
}

static int load_ca(struct ca *ca, const char *key_path, char *err)
{
    FILE *f = fopen(ca->cert_path, "r");
    if (!f) {
        snprintf(err, APISIM_ERR_LEN, "cannot read %.300s: %s", ca->cert_path, strerror(errno));
        return -1;
    }
    ca->cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!ca->cert) {
        snprintf(err, APISIM_ERR_LEN,
                 "%.300s is not a PEM certificate (move the directory away to make a new CA)",
                 ca->cert_path);
        ERR_clear_error();
        return -1;
    }
    if (!(f = fopen(key_path, "r"))) {
        snprintf(err, APISIM_ERR_LEN, "cannot read %.300s: %s", key_path, strerror(errno));
        return -1;
    }
    ca->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!ca->key || X509_check_private_key(ca->cert, ca->key) != 1) {
        snprintf(err, APISIM_ERR_LEN, "%.200s is not the private key of %.200s", key_path,
                 ca->cert_path);
        ERR_clear_error();
        return -1;
    }
    return 0;
}

int ca_open(struct ca **out, const char *dir, int *created, char *err)
{
    int rc = -1, dfd = -1;
    char key_path[CA_PATH_MAX];
    struct ca *ca = calloc(1, sizeof *ca);
    if (created)
        *created = 0;
    if (!ca) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    pthread_mutex_init(&ca->mu, NULL);
    if (snprintf(ca->cert_path, sizeof ca->cert_path, "%s/%s", dir, CA_CERT_FILE) >=
            (int)sizeof ca->cert_path ||
        snprintf(key_path, sizeof key_path, "%s/%s", dir, CA_KEY_FILE) >= (int)sizeof key_path) {
        snprintf(err, APISIM_ERR_LEN, "CA directory path too long: %.200s", dir);
        goto out;
    }
    if (make_dirs(dir, err) < 0)
        goto out;
    /* The directory itself is the lock: nothing else is written beside the CA. */
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || flock(dfd, LOCK_EX) < 0) {
        snprintf(err, APISIM_ERR_LEN, "cannot lock the CA directory %.300s: %s", dir,
                 strerror(errno));
        goto out;
    }
    int have_cert = access(ca->cert_path, F_OK) == 0, have_key = access(key_path, F_OK) == 0;
    if (have_cert != have_key) {
        snprintf(err, APISIM_ERR_LEN,
                 "CA directory %.300s holds %s but not %s: restore it, or remove the directory to "
                 "make a new CA",
                 dir, have_cert ? CA_CERT_FILE : CA_KEY_FILE,
                 have_cert ? CA_KEY_FILE : CA_CERT_FILE);
        goto out;
    }
    if (have_cert) {
        if (load_ca(ca, key_path, err) < 0)
            goto out;
    } else {
        if (create_ca(ca, key_path, err) < 0)
            goto out;
        if (created)
            *created = 1;
    }
    if (!(ca->leaf_key = EVP_EC_gen("P-256"))) {
        ssl_error(err, "cannot make the leaf key");
        goto out;
    }
    rc = 0;
out:
    if (dfd >= 0)
        close(dfd); /* releases the lock */
    if (rc < 0) {
        ca_free(ca);
        return -1;
    }
    *out = ca;
    return 0;
}

const char *ca_cert_path(const struct ca *ca)
{
    return ca->cert_path;
}

X509 *ca_cert(const struct ca *ca)
{
    return ca->cert;
}

unsigned long ca_minted(const struct ca *ca)
{
    return ca->minted;
}

int ca_host_valid(const char *host)
{
    unsigned char ip[16];
    size_t n = strlen(host);
    if (n == 0 || n > CA_HOST_MAX)
        return 0;
    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1)
        return 1;
    for (const char *p = host; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == '*'))
            return 0;
    }
    return host[0] != '.' && strstr(host, "..") == NULL;
}

/* subjectAltName with one entry: the IP address or the DNS name. */
static int add_san(X509 *x, const char *host)
{
    int rc = -1;
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    GENERAL_NAME *gen = GENERAL_NAME_new();
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);
    if (!gens || !gen)
        goto out;
    if (ip) {
        GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
        ip = NULL;
    } else {
        ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
        if (!dns || ASN1_STRING_set(dns, host, (int)strlen(host)) != 1) {
            ASN1_IA5STRING_free(dns);
            goto out;
        }
        GENERAL_NAME_set0_value(gen, GEN_DNS, dns);
    }
    if (sk_GENERAL_NAME_push(gens, gen) <= 0)
        goto out;
    gen = NULL;
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1)
        rc = 0;
out:
    ASN1_OCTET_STRING_free(ip);
    GENERAL_NAME_free(gen);
    GENERAL_NAMES_free(gens);
    return rc;
}

static X509 *mint(struct ca *ca, const char *host, char *err)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509V3_CTX v3;
    char cn[65];
    snprintf(cn, sizeof cn, "%.64s", host); /* CN is capped at 64; the SAN has it whole */
    /* Never past the CA's own end of validity. */
    int days = LEAF_DAYS, pday = 0, psec = 0;
    if (ASN1_TIME_diff(&pday, &psec, NULL, X509_get0_notAfter(ca->cert)) == 1 && pday < days)
        days = pday > 0 ? pday : 0;
    if (!x || !name || X509_set_version(x, 2) != 1 || set_random_serial(x) < 0 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -LEAF_BACKDATE) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400L) ||
        X509_set_pubkey(x, ca->leaf_key) != 1 ||
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"apisim", -1,
                                   -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_subject_name(x, name) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1 || add_san(x, host) < 0)
        goto fail;
    X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
    if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(x, &v3, NID_key_usage, "critical,digitalSignature,keyEncipherment") < 0 ||
        add_ext(x, &v3, NID_ext_key_usage, "serverAuth") < 0 ||
        add_ext(x, &v3, NID_subject_key_identifier, "hash") < 0 ||
        add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") < 0 ||
        X509_sign(x, ca->key, EVP_sha256()) <= 0)
        goto fail;
    X509_NAME_free(name);
    return x;
fail:
    ssl_error(err, "cannot mint a certificate");
    X509_NAME_free(name);
    X509_free(x);
    return NULL;
}

int ca_leaf(struct ca *ca, const char *host, X509 **cert, EVP_PKEY **key, char *err)
{
    if (!ca_host_valid(host)) {
        snprintf(err, APISIM_ERR_LEN, "cannot make a certificate for \"%.100s\": not a host name",
                 host);
        return -1;
    }
    pthread_mutex_lock(&ca->mu);
    ca->tick++;
    for (size_t i = 0; i < ca->ncache; i++) {
        if (ascii_casecmp(ca->cache[i].host, host) == 0) {
            ca->cache[i].used = ca->tick;
            X509_up_ref(ca->cache[i].cert);
            *cert = ca->cache[i].cert;
            pthread_mutex_unlock(&ca->mu);
            EVP_PKEY_up_ref(ca->leaf_key);
            *key = ca->leaf_key;
            return 0;
        }
    }
    /* Minting under the lock: a handshake burst for one new host mints it once. */
    X509 *x = mint(ca, host, err);
    char *h = x ? strdup(host) : NULL;
    if (!x || !h) {
        pthread_mutex_unlock(&ca->mu);
        X509_free(x);
        if (x)
            snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    ca->minted++;
    size_t slot = ca->ncache;
    if (slot == CA_CACHE_MAX) {
        slot = 0;
        for (size_t i = 1; i < ca->ncache; i++)
            if (ca->cache[i].used < ca->cache[slot].used)
                slot = i;
        free(ca->cache[slot].host);
        X509_free(ca->cache[slot].cert);
    } else {
        ca->ncache++;
    }
    ca->cache[slot].host = h;
    ca->cache[slot].cert = x;
    ca->cache[slot].used = ca->tick;
    X509_up_ref(x);
    pthread_mutex_unlock(&ca->mu);
    *cert = x;
    EVP_PKEY_up_ref(ca->leaf_key);
    *key = ca->leaf_key;
    return 0;
}

void ca_free(struct ca *ca)
{
    if (!ca)
        return;
    for (size_t i = 0; i < ca->ncache; i++) {
        free(ca->cache[i].host);
        X509_free(ca->cache[i].cert);
    }
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    EVP_PKEY_free(ca->leaf_key);
    pthread_mutex_destroy(&ca->mu);
    free(ca);
}
