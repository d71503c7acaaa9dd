"""The experiments: the code the notebooks run (fits, result rows, tables, figures), one module per notebook."""
