/* claude — the fake claude CLI and claude-record (see claude.h). */
#include "claude.h"

#include "log.h"

int claude_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    log_msg(LOG_ERROR, "claude: not implemented yet");
    return 1;
}

int claude_record_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    log_msg(LOG_ERROR, "claude-record: not implemented yet");
    return 1;
}
