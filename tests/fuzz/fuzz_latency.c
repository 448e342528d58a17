/* libFuzzer target: latency specs (latency.h), then a few draws from what parsed.
 * Input: the spec text (up to the first '\0'). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "latency.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    struct latency_spec spec;
    char err[APISIM_ERR_LEN];
    if (latency_parse(s, &spec, err) == 0) {
        struct latency_rng rng;
        latency_seed(&rng, size);
        double factor;
        (void)latency_replays_chunks(&spec, &factor);
        for (int i = 0; i < 4; i++)
            (void)latency_first_byte_us(&spec, &rng, (int64_t)i * 12345);
    }
    free(s);
    return 0;
}
