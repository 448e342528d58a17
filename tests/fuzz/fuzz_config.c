/* libFuzzer target: --config FILE parsing (config.h), and route lookup on what parsed.
 * The whole input is the file's text. */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config cfg = {0};
    char err[APISIM_ERR_LEN];
    if (config_parse((const char *)data, size, &cfg, err) == 0) {
        (void)config_route_for(&cfg, "POST", "/v1/messages");
        (void)config_route_for(&cfg, "GET", "/v1/files/abc/content");
        (void)config_route_for(&cfg, "", "");
    }
    config_free(&cfg);
    return 0;
}
