# Fails when any C file of the project differs from what clang-format would make of it.
# Called as: cmake -DCLANG_FORMAT=... -DROOT=... -P check_format.cmake
file(GLOB_RECURSE files ${ROOT}/src/*.c ${ROOT}/src/*.h ${ROOT}/tests/unit/*.[ch]
     ${ROOT}/tests/fuzz/*.c ${ROOT}/tests/fuzz/*.h ${ROOT}/bench/*.c)
execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror ${files}
                RESULT_VARIABLE rc ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "clang-format would change these files (run clang-format -i on them):\n${out}")
endif()
