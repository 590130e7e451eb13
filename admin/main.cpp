// flexmon-admin: storage commands run on the collector's host.
#include "admin/admin_cli.h"

int main(int argc, char** argv) { return flexmon::admin_main(argc, argv); }
