"""Circuit validation: faithfulness, completeness and minimality of transformer circuits."""
