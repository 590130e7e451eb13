# Writes INPUT into OUTPUT as a C++ raw string constant named NAME.
file(READ ${INPUT} text)
file(WRITE ${OUTPUT} "// Generated from ${INPUT}; do not edit.\n#pragma once\n"
     "inline constexpr const char* ${NAME} = R\"flexmon_embed(${text})flexmon_embed\";\n")
