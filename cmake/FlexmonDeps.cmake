# Finds flexmon's dependencies: Debian's packages, through pkg-config or their
# CMake configs; xmlrpc-c through xmlrpc-c-config, as it ships no .pc file.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(Boost 1.74 REQUIRED)
find_package(OpenSSL 3 REQUIRED)
# expat checks every XML-RPC body before xmlrpc-c reads it (manager/call_guard.h).
find_package(EXPAT 2.4 REQUIRED)
find_package(Protobuf REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(yaml-cpp REQUIRED)
pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)

find_program(XMLRPC_C_CONFIG xmlrpc-c-config REQUIRED)

# Creates an imported target from `xmlrpc-c-config FEATURES --cflags --libs`.
function(flexmon_xmlrpc_target target)
  execute_process(COMMAND ${XMLRPC_C_CONFIG} ${ARGN} --cflags
                  OUTPUT_VARIABLE cflags OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  execute_process(COMMAND ${XMLRPC_C_CONFIG} ${ARGN} --libs
                  OUTPUT_VARIABLE libs OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  separate_arguments(libs UNIX_COMMAND "${libs}")
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  target_compile_options(${target} INTERFACE ${cflags})
  target_link_libraries(${target} INTERFACE ${libs})
endfunction()

flexmon_xmlrpc_target(xmlrpc::server c++2 abyss-server)
flexmon_xmlrpc_target(xmlrpc::client c++2 client)
