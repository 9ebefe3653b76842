//! The shape shared by providers whose file is INI-like (aws, azure,
//! lambda): a default file, an [`IniLayout`] mapping value keys onto keys of
//! one section, and values that must fit on one line. Parsing, merging and
//! removal are the layout's; every other line of the file stays byte for
//! byte. Errors name files, lines and keys, never values.

use super::{Facts, FileMerge, FileRemove, Merge, Provider, ProviderError, Removal, SourceFile};
use crate::formats::ini::IniLayout;
use crate::secret_value::Values;

/// A provider kept in an INI-like file.
#[derive(Debug)]
pub struct IniFile {
    /// Its id, file, vars and keys (the required ones a subset of the keys).
    pub facts: Facts,
    pub layout: IniLayout,
}

impl Provider for IniFile {
    fn facts(&self) -> &Facts {
        &self.facts
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let f = super::first_file(self, files)?;
        self.layout.parse(f.path, f.text, self.required_keys())
    }
    fn merge(&self, file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
        self.layout.merge(self.id(), file)
    }
    fn remove(&self, file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
        self.layout.remove(file)
    }
    fn validate(&self, values: &Values) -> Result<(), ProviderError> {
        super::check_required(self, values)?;
        self.layout.validate(self.id(), values)
    }
}
