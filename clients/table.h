// A plain-text table with aligned columns, as the `flexmon` client prints it.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace flexmon {

class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void add(std::vector<std::string> row);
  void print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace flexmon
