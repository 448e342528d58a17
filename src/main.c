/* apisim — command-line entry: parses the command line and wires the modules together. */
#include <stdio.h>
#include <string.h>

#include "log.h"

static void usage(FILE *f)
{
    fputs("usage: apisim COMMAND [options]\n"
          "commands: record, replay, mock, ls, show, export, import, claude, claude-record\n"
          "run `apisim COMMAND --help` for a command's options\n",
          f);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    fprintf(stderr, "apisim: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
