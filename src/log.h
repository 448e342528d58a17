/* log — the one place apisim writes diagnostics.
 *
 * Everything a person or script reads as a result goes to stdout; everything else goes
 * through log_msg() to stderr. Messages below the current level are not even formatted.
 * Thread-safe: each message is written with one fputs-equivalent call.
 */
#ifndef APISIM_LOG_H
#define APISIM_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_QUIET = 4 };

extern enum log_level log_current_level;

/* Set the minimum level that is written. */
void log_set_level(enum log_level level);

/* Write "apisim: LEVEL: message\n" to stderr when level >= the current level. */
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_msg(level, ...)                                                                        \
    do {                                                                                           \
        if ((level) >= log_current_level)                                                          \
            log_write((level), __VA_ARGS__);                                                       \
    } while (0)

#endif
