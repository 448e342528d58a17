/* front: the pure parts — CONNECT targets and --connect-to rules. */
#include <string.h>

#include "check.h"
#include "front.h"

int main(void)
{
    static const struct {
        const char *authority;
        int ok;
        const char *host;
        unsigned port;
    } targets[] = {
        {"api.example.test:443", 1, "api.example.test", 443},
        {"API.Example.Test:8443", 1, "API.Example.Test", 8443},
        {"127.0.0.1:1", 1, "127.0.0.1", 1},
        {"[::1]:443", 1, "::1", 443},
        {"host:65535", 1, "host", 65535},
        {"nohost", 0, NULL, 0},
        {"host:", 0, NULL, 0},
        {":443", 0, NULL, 0},
        {"host:0", 0, NULL, 0},
        {"host:65536", 0, NULL, 0},
        {"host:12ab", 0, NULL, 0},
        {"host:-1", 0, NULL, 0},
        {"::1:443", 0, NULL, 0},
        {"[::1:443", 0, NULL, 0},
        {"[::1]443", 0, NULL, 0},
        {"a b:443", 0, NULL, 0},
        {"exa$mple:443", 0, NULL, 0},
        {"*.example.test:443", 0, NULL, 0},
        {"user@host:443", 0, NULL, 0},
    };
    for (size_t i = 0; i < N(targets); i++) {
        char host[256] = "";
        unsigned port = 0;
        int rc = front_parse_authority(targets[i].authority, host, sizeof host, &port);
        CHECK((rc == 0) == targets[i].ok, "\"%s\": rc %d", targets[i].authority, rc);
        if (targets[i].ok && rc == 0)
            CHECK(strcmp(host, targets[i].host) == 0 && port == targets[i].port,
                  "\"%s\": host \"%s\" port %u", targets[i].authority, host, port);
    }
    char small[4];
    unsigned port;
    CHECK(front_parse_authority("longhost:443", small, sizeof small, &port) < 0,
          "a host longer than the buffer is refused");

    static const struct {
        const char *rule;
        int ok;
    } rules[] = {
        {"api.example.test:443:127.0.0.1:8443", 1},
        {"::127.0.0.1:8443", 1},
        {"a:443::", 1},
        {"[::1]:443:[::1]:8443", 1},
        {"a:443:b", 0},
        {"a:443:b:1:2", 0},
        {"a:99999:b:1", 0},
        {"a:443:b:0", 0},
        {"a b:443:b:1", 0},
        {"", 0},
    };
    char err[APISIM_ERR_LEN];
    for (size_t i = 0; i < N(rules); i++) {
        int rc = front_connect_to_check(rules[i].rule, err);
        CHECK((rc == 0) == rules[i].ok, "\"%s\": rc %d", rules[i].rule, rc);
        if (rc < 0)
            CHECK(strstr(err, "--connect-to") != NULL, "\"%s\": err names the flag: %s",
                  rules[i].rule, err);
    }
    return failures ? 1 : 0;
}
