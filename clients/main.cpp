// flexmon: the command-line client.
#include "clients/cli.h"

int main(int argc, char** argv) { return flexmon::client_main(argc, argv); }
